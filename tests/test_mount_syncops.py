"""Draft requests answered in pyfuse3's reader threads (mount/syncops.py,
third_party/pyfuse3 syncpath.c), through a real mount: the WRITE and RELEASE of
a created file, the GETATTR of its folder and the LOOKUP of a new name never
reach the trio loop, and a commit still never sees a write half-made."""
from __future__ import annotations

import errno
import os
import threading

import pyfuse3
import pytest
from conftest import randbytes, skip_or_fail
from draft_helpers import version_files
from mountutil import cli, mount_factory  # noqa: F401  (fixture)

from artifactfs.registry.versions import Registry

BLOCK = 64 * 1024


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    Registry.open(url, create=True)
    return url


@pytest.fixture
def mnt(store, mount_factory):  # noqa: F811
    if not hasattr(pyfuse3, "fastpath_set_sync_handler"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    m = mount_factory(store)
    os.mkdir(m.p("ds"))
    return m


def test_small_files_copied_in_are_answered_in_the_reader_threads(mnt, store):
    files = {f"f{i:03d}.bin": randbytes(BLOCK) for i in range(100)}
    before = mnt.stats()["sync_answers"]
    for name, data in files.items():  # as cp does: a new name, O_CREAT|O_WRONLY, one write, close
        assert not os.path.exists(mnt.p("ds", "draft", name))
        fd = os.open(mnt.p("ds", "draft", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            assert os.write(fd, data) == len(data)
        finally:
            os.close(fd)
    # at least the WRITE and the RELEASE of each file, most LOOKUPs and folder GETATTRs too
    assert mnt.stats()["sync_answers"] - before >= 2 * len(files)
    for name, data in files.items():
        with open(mnt.p("ds", "draft", name), "rb") as f:
            assert f.read() == data
    cli("sync", mnt.p("ds", "draft"), env=mnt.env, check=True)
    assert version_files(Registry.open(store), "ds", 0) == {name: (data, False) for name, data in files.items()}


def test_errors_of_requests_answered_in_the_reader_threads(mnt):
    with pytest.raises(OSError) as e:
        os.stat(mnt.p("ds", "draft", "x" * 300))
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.p("ds", "draft", "absent"))
    os.mkdir(mnt.p("ds", "draft", "sub"))
    st = os.stat(mnt.p("ds", "draft", "sub"))
    assert st.st_nlink == 2 and st.st_mode & 0o777 == 0o755 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_commit_never_sees_a_write_half_made(mnt, store):
    """A writer appends 64 KiB blocks, each answered in a reader thread, while
    versions are committed: each version holds a whole number of blocks, in order."""
    stream = randbytes(200 * BLOCK)
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            fd = os.open(mnt.p("ds", "draft", "log.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                for off in range(0, len(stream), BLOCK):
                    assert os.pwrite(fd, stream[off:off + BLOCK], off) == BLOCK
            finally:
                os.close(fd)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)
        finally:
            done.set()

    with open(mnt.p("ds", "draft", "first.txt"), "w") as f:  # the draft's base is prepared (LiveDraft._warm)
        f.write("x")
    t = threading.Thread(target=writer)
    t.start()
    syncs = 0
    while not done.is_set() or syncs == 0:
        cli("sync", mnt.p("ds", "draft"), env=mnt.env, check=True)
        syncs += 1
    t.join()
    assert not errors
    cli("sync", mnt.p("ds", "draft"), env=mnt.env, check=True)
    reg = Registry.open(store)
    logs = []
    while True:
        try:
            files = version_files(reg, "ds", len(logs))
        except Exception:  # noqa: BLE001 (no such version: the last was seen)
            break
        logs.append(files.get("log.bin", (b"", False))[0])
    assert logs and logs[-1] == stream
    for data in logs:
        assert len(data) % BLOCK == 0 and data == stream[:len(data)]
