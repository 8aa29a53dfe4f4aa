"""The three ways a mount serves OPEN (mount/noopen.py: OpenMode): OPENs of
version files answered by pyfuse3's native threads (the default), every OPEN
through Python (--send-opens), no OPEN at all (--no-opens): the same bytes,
draft writes and errors each way, and which OPEN requests reached the daemon's
Python ("opens" in user.artifactfs.stats) or its native threads
("native_opens"); and Operations called directly as the kernel calls it
without OPEN."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pyfuse3
import pytest
from conftest import skip_or_fail
from mountutil import mount_factory  # noqa: F401 (fixture)
from test_mount_read import commit
from test_ops_inprocess import _ctx, _parts, lookup_path, serve
from test_ops_inprocess import store as inprocess_store  # noqa: F401 (fixture)

from artifactfs.mount import noopen
from artifactfs.registry.versions import Registry

FILES = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 64}
MODES = {"native OPEN": (), "--send-opens": ("--send-opens",), "--no-opens": ("--no-opens",)}


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    Registry.open(url, create=True)
    commit(url, "ds", str(tmp_path / "src"), FILES)
    return url


@pytest.fixture(params=list(MODES), ids=list(MODES))
def mnt(request, store, mount_factory):  # noqa: F811
    if request.param != "--send-opens" and not noopen.NATIVE_AVAILABLE:
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    m = mount_factory(store, *MODES[request.param])
    m.mode = request.param
    return m


def test_reads_and_the_open_requests_they_cost(mnt):
    for _ in range(2):  # two processes each, every file
        for name, data in FILES.items():
            out = subprocess.run(["cat", mnt.p("ds", "ds:v0", name)], capture_output=True, check=True).stdout
            assert out == data
    stats = mnt.stats()
    assert stats["opens"] == (4 if mnt.mode == "--send-opens" else 0)
    assert stats["native_opens"] == (4 if mnt.mode == "native OPEN" else 0)


def test_draft_files_written_truncated_appended_and_fsynced(mnt):
    path = mnt.p("ds", "draft", "notes.txt")
    with open(path, "w") as f:
        f.write("a long first line\n")
    with open(path, "w") as f:  # O_TRUNC: a SETATTR when no OPEN is sent
        f.write("short\n")
    with open(path, "a") as f:
        f.write("more\n")
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"S", 0)
    finally:
        os.close(fd)
    with open(path) as f:
        assert f.read() == "Short\nmore\n"
    with open(mnt.p("ds", "draft", "a.txt"), "r+b") as f:  # a file of the base version, copied up
        f.seek(0, os.SEEK_END)
        f.write(b"beta\n")
    assert open(mnt.p("ds", "draft", "a.txt"), "rb").read() == b"alpha\nbeta\n"
    assert open(mnt.p("ds", "ds:v0", "a.txt"), "rb").read() == b"alpha\n"


def test_version_files_refuse_writes(mnt):
    """The open itself is refused, root's too (these tests run as root), so no
    descriptor (and no writable shared mmap) that could write exists: by the
    mount (EROFS) when OPEN is sent, else by the kernel (EACCES): with --no-opens
    version files are owned by no user, so CAP_DAC_OVERRIDE does not apply."""
    path = mnt.p("ds", "ds:v0", "a.txt")
    refused = errno.EACCES if mnt.mode == "--no-opens" else errno.EROFS
    for flags in (os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND, os.O_RDWR):
        with pytest.raises(OSError) as e:
            os.close(os.open(path, flags))
        assert e.value.errno == refused
    assert open(path, "rb").read() == FILES["a.txt"]
    st = os.stat(path)
    nobody = tuple(int(open(f"/proc/sys/fs/overflow{ids}").read()) for ids in ("uid", "gid"))
    assert (st.st_uid, st.st_gid) == (nobody if mnt.mode == "--no-opens" else (os.getuid(), os.getgid()))


def test_operations_serve_reads_by_inode_without_a_handle(inprocess_store, tmp_path):  # noqa: F811
    parts, _ = _parts(inprocess_store, tmp_path, send_opens=False)
    parts.ops.no_open = True  # as --no-opens sets it with the patched pyfuse3 (the kernel side is the mount's)

    async def body(parts) -> None:
        f = await lookup_path(parts, "c", "c:v0", "README.md")
        with pytest.raises(pyfuse3.FUSEError) as e:  # the first OPEN: the kernel then sends no more
            await parts.ops.open(f.st_ino, os.O_RDONLY, _ctx())
        assert e.value.errno == errno.ENOSYS
        assert bytes(await parts.ops.read(f.st_ino, 0, 4096)) == b"hello\n"  # fh is the inode
        assert bytes(await parts.ops.read(f.st_ino, 2, 2)) == b"ll"
        with pytest.raises(pyfuse3.FUSEError) as e:
            await parts.ops.write(f.st_ino, 0, b"x")
        assert e.value.errno == errno.EROFS
        await parts.ops.fsync(f.st_ino, False)
        await parts.ops.release(f.st_ino)  # the one RELEASE after the ENOSYS: nothing to drop
        assert bytes(await parts.ops.read(f.st_ino, 0, 4096)) == b"hello\n"
        await parts.ops.forget([(f.st_ino, 1)])
        with pytest.raises(pyfuse3.FUSEError) as e:  # forgotten: its handle went with it
            await parts.ops.read(f.st_ino, 0, 4096)
        assert e.value.errno == errno.ESTALE
        assert parts.ctx.reader.counters["opens"] == 0
    serve(parts, body)


def test_isatty_ioctls_and_security_xattrs_are_answered_without_python(mnt):
    """Python's open() asks isatty() of every file: an IOCTL the patched pyfuse3's
    reader thread answers with ENOTTY, with or without OPEN requests; so is the
    kernel's security.capability lookup before a write (ENODATA)."""
    if not hasattr(pyfuse3, "fastpath_answered"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    path = mnt.p("ds", "ds:v0", "a.txt")
    before = mnt.stats()["native_answers"]
    script = ("import sys, fcntl, termios\n"
              "for _ in range(10):\n"
              "    with open(sys.argv[1], 'rb') as f:\n"  # default buffering: isatty()
              "        assert f.read() == b'alpha\\n'\n"
              "        try:\n"
              "            fcntl.ioctl(f.fileno(), termios.TCGETS, bytes(64))\n"
              "        except OSError as e:\n"
              "            print(e.errno)\n")
    out = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(errno.ENOTTY)] * 10
    assert mnt.stats()["native_answers"] - before >= 20  # isatty() and TCGETS per open
    draft_file = mnt.p("ds", "draft", "new.txt")
    with open(draft_file, "w") as f:
        f.write("x")
    before = mnt.stats()
    for name in ("security.capability", "security.selinux"):
        with pytest.raises(OSError) as e:
            os.getxattr(draft_file, name)
        assert e.value.errno == errno.ENODATA
    after = mnt.stats()  # (counted by opcode: a late RELEASE or GETATTR of the draft file is no GETXATTR)
    assert after["requests"]["GETXATTR"]["native"] - before["requests"].get("GETXATTR", {}).get("native", 0) == 2
    assert os.getxattr(mnt.path, "user.artifactfs.project")  # other names still reach the mount


def test_getattr_after_a_read_is_answered_without_python_for_version_files_only(mnt):
    """Every READ the kernel sends marks the file's atime stale, so the next
    stat() (Python's open() makes one) asks GETATTR again.  A version file's
    attributes carry the long timeout (immutable): the patched pyfuse3's reader
    thread answers that GETATTR from the attributes pinned at LOOKUP.  A draft
    file's attributes change, so its GETATTR still reaches Python (its handler,
    syncops.py), never the pins."""
    if not hasattr(pyfuse3, "fastpath_answered"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")

    def read_through_the_daemon(path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: the next read is a READ
            assert os.read(fd, 100)
        finally:
            os.close(fd)

    def getattrs() -> dict[str, int]:
        return mnt.stats()["requests"].get("GETATTR", {"native": 0})

    path = mnt.p("ds", "ds:v0", "a.txt")
    read_through_the_daemon(path)
    before = getattrs()
    st = os.stat(path)
    assert (st.st_size, stat.S_IMODE(st.st_mode), stat.S_ISREG(st.st_mode)) == (6, 0o444, True)
    assert getattrs()["native"] == before["native"] + 1  # (Python's: the root's, for the stats xattr)
    os.stat(path)  # the attributes are fresh again: no request at all
    assert getattrs()["native"] == before["native"] + 1

    draft_file = mnt.p("ds", "draft", "grows.txt")
    with open(draft_file, "wb") as f:
        f.write(b"12345")
    for size, more in ((5, b"678"), (8, b"")):
        read_through_the_daemon(draft_file)
        before = mnt.stats()
        assert os.stat(draft_file).st_size == size
        after = mnt.stats()  # (asked of Python: of the draft's handler in a reader thread, syncops.py)
        assert after["native_answers"] - after["sync_answers"] == before["native_answers"] - before["sync_answers"]
        with open(draft_file, "ab") as f:
            f.write(more)


def test_a_read_only_mount_sends_no_open_and_the_kernel_refuses_writes(store, mount_factory):  # noqa: F811
    """--read-only mounts read-only in the kernel, which refuses every open for
    writing with EROFS, root's too, before asking the daemon: so no OPEN is asked
    for (warm opens cost no round trip) and files keep their owner."""
    if not noopen.AVAILABLE:
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    m = mount_factory(store, "--read-only")
    path = m.p("ds", "ds:v0", "a.txt")
    for _ in range(3):
        assert subprocess.run(["cat", path], capture_output=True, check=True).stdout == FILES["a.txt"]
    for flags in (os.O_WRONLY | os.O_TRUNC, os.O_RDWR):
        with pytest.raises(OSError) as e:
            os.close(os.open(path, flags))
        assert e.value.errno == errno.EROFS
    stats = m.stats()
    assert stats["opens"] == 0 and stats["native_opens"] == 0
    assert stats["requests"]["OPEN"] == {"native": 0, "python": 1}, stats["requests"]  # the ENOSYS, once
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert "a read-only mount: the kernel refuses every open for writing with EROFS" in m.log


def test_send_opens_and_no_opens_exclude_each_other(tmp_path):
    (tmp_path / "mnt").mkdir()
    done = subprocess.run([sys.executable, "-m", "artifactfs", "--store", str(tmp_path / "store"), "mount",
                           "--send-opens", "--no-opens", str(tmp_path / "mnt")], capture_output=True, text=True)
    assert done.returncode == 2 and "exclude each other" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "store").exists()  # refused before anything was made
