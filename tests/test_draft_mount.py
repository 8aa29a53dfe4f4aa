"""draft/ folders through a real mount: every ordinary file operation, what is
refused and with which errno, new collections, attributes and aliases through
the filesystem, and `artifactfs sync`."""
from __future__ import annotations

import errno
import json
import mmap
import os
import signal
import socket
import stat
import subprocess

import pytest
import xxhash
from conftest import randbytes
from draft_helpers import dir_files, errno_of, publish, version_files
from mountutil import cli, is_mounted, mount_factory, wait_for  # noqa: F401  (fixture)

from artifactfs.drafts.syncclient import sockaddr
from artifactfs.registry.keys import blob_key
from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry

BASE = {"a/x": b"ax", "a/y": (b"ay" * 5000, True), "b/c/d": b"bcd", "top": b"t"}


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", BASE)
    return url


def sync(m, *args: str, ok: bool = True):
    done = cli("sync", *args, env=m.env, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def oserror(fn) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def test_ordinary_file_operations_become_a_version(store, mount_factory, tmp_path):
    m = mount_factory(store, "--refresh", "1")
    d = m.p("ds", "draft")
    assert sorted(os.listdir(d)) == ["a", "b", "top"]
    assert open(f"{d}/a/x", "rb").read() == b"ax"
    assert os.stat(f"{d}/a/y").st_mode & 0o777 == 0o755 and os.path.getsize(f"{d}/a/y") == 10000
    with open(f"{d}/new.bin", "wb") as f:           # create, write
        f.write(b"hello")
    with open(f"{d}/a/x", "ab") as f:               # append to a base file (copy-up)
        f.write(b"+more")
    fd = os.open(f"{d}/sparse", os.O_CREAT | os.O_WRONLY, 0o644)
    os.pwrite(fd, b"end", 1 << 20)                  # sparse write far out
    os.pwrite(fd, b"mid", 4096)                     # write at an offset
    os.fsync(fd)
    os.close(fd)
    with open(f"{d}/top", "r+b") as f:              # read-after-write on the same descriptor
        f.write(b"T")
        f.seek(0)
        assert f.read() == b"T"
    os.truncate(f"{d}/a/y", 3)                      # truncate keeps the executable bit
    with open(f"{d}/b/c/d", "wb") as f:             # O_TRUNC
        f.write(b"new d")
    os.mkdir(f"{d}/dir")
    os.rename(f"{d}/new.bin", f"{d}/dir/moved.bin")
    os.rename(f"{d}/b", f"{d}/dir/b")               # a folder, with its content
    with open(f"{d}/over", "wb") as f:
        f.write(b"over")
    os.rename(f"{d}/over", f"{d}/top")              # over an existing file
    os.chmod(f"{d}/dir/moved.bin", 0o755)
    os.utime(f"{d}/dir/moved.bin", ns=(10**18, 10**18))
    assert os.stat(f"{d}/dir/moved.bin").st_mtime_ns == 10**18
    os.mkdir(f"{d}/gone")
    os.rmdir(f"{d}/gone")
    with open(f"{d}/mm", "wb") as f:
        f.write(b"mapped bytes")
    with open(f"{d}/mm", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:6] == b"mapped"
    with open(f"{d}/a/y", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == b"aya"
    os.unlink(f"{d}/mm")
    # the same operations on a plain folder give what the version must hold
    plain = tmp_path / "plain"
    assert sync(m, d).stdout == "ds:v1\n"
    want = dir_files(d)
    assert want["sparse"][0] == bytes(4096) + b"mid" + bytes((1 << 20) - 4099) + b"end"
    got = version_files(Registry.open(store), "ds", 1)
    assert got == want
    assert got["a/y"] == (b"aya", True) and got["dir/moved.bin"] == (b"hello", True)
    assert got["top"] == (b"over", False) and got["dir/b/c/d"] == (b"new d", False)
    assert not plain.exists()
    assert sync(m, d).stdout == "ds:v1 (unchanged)\n"
    wait_for(lambda: os.readlink(m.p("ds", "ds:latest")) == "ds:v1", 60, "latest to move")


def test_what_is_refused(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    assert oserror(lambda: os.rename(f"{d}/top", m.p("ds", "top"))) in (errno.EXDEV, errno.EPERM, errno.EROFS)
    assert oserror(lambda: os.rmdir(f"{d}/a")) == errno.ENOTEMPTY
    assert oserror(lambda: os.unlink(f"{d}/a")) in (errno.EISDIR, errno.EPERM)
    assert oserror(lambda: os.rename(f"{d}/a", f"{d}/a/inside")) == errno.EINVAL
    assert oserror(lambda: open(m.p("ds", "ds:v0", "top"), "wb")) == errno.EROFS
    assert sorted(os.listdir(d)) == ["a", "b", "top"]
    assert sync(m, d).stdout == "ds:v0 (unchanged)\n"


def test_untouched_files_are_never_fetched(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    before = m.stats()["bytes_fetched"]
    os.rename(f"{d}/a", f"{d}/a2")                  # moving a base folder fetches nothing
    os.chmod(f"{d}/top", 0o700)                     # nor does chmod of a base file
    with open(f"{d}/b/c/d", "wb") as f:             # nor O_TRUNC
        f.write(b"x")
    assert m.stats()["bytes_fetched"] == before
    assert open(f"{d}/a2/y", "rb").read() == b"ay" * 5000  # reading fetches, from the base
    assert m.stats()["bytes_fetched"] == before + 10000
    assert sync(m, d).stdout == "ds:v1\n"
    reg = Registry.open(store)
    assert reg.lookup(reg.version("proj", "ds", 1).root, "a2").tree == reg.lookup(
        reg.version("proj", "ds", 0).root, "a").tree, "the moved folder is the same tree"
    assert version_files(reg, "ds", 1)["top"] == (b"t", True)


def test_new_collection_by_mkdir(store, mount_factory):
    m = mount_factory(store, "--default-type", "model")
    os.mkdir(m.p("weights"))
    os.mkdir(m.p("tokens"))
    assert oserror(lambda: os.mkdir(m.p("ds"))) == errno.EEXIST
    assert oserror(lambda: os.mkdir(m.p("bad name"))) == errno.EINVAL
    assert sorted(os.listdir(m.p())) == ["ds", "tokens", "weights"]
    assert os.listdir(m.p("weights")) == ["draft"] and os.listdir(m.p("weights", "draft")) == []
    os.setxattr(m.p("tokens"), "user.artifact.type", b"tokenized")
    reg = Registry.open(store)
    assert [c.name for c in reg.collections("proj")] == ["ds"], "not in the store before its first commit"
    with open(m.p("weights", "draft", "w.pt"), "wb") as f:
        f.write(b"w")
    with open(m.p("tokens", "draft", "t"), "wb") as f:
        f.write(b"t")
    os.mkdir(m.p("empty"))
    os.rmdir(m.p("empty"))
    assert "empty" not in os.listdir(m.p())
    os.mkdir(m.p("typo"))  # written to and emptied again: nothing to publish, and rmdir still works
    with open(m.p("typo", "draft", "x"), "wb") as f:
        f.write(b"x")
    assert oserror(lambda: os.rmdir(m.p("typo"))) == errno.ENOTEMPTY
    os.unlink(m.p("typo", "draft", "x"))
    empty = sync(m, m.p("typo"), ok=False)
    assert empty.returncode == 1 and "typo: the draft of this new collection is empty" in empty.stderr
    done = sync(m, m.p())  # every draft with something to publish: not typo
    assert sorted(done.stdout.splitlines()) == ["tokens:v0", "weights:v0"]
    os.rmdir(m.p("typo"))
    assert "typo" not in os.listdir(m.p())
    assert reg.collection("proj", "weights").type == "model"
    assert reg.collection("proj", "tokens").type == "tokenized"
    assert oserror(lambda: os.setxattr(m.p("tokens"), "user.artifact.type", b"other")) == errno.EPERM


def test_attributes_for_the_next_commit(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    os.setxattr(d, "user.artifact.description", b"from xattr")
    os.setxattr(d, "user.artifact.metadata", b'{"lr": 0.1}')
    os.setxattr(d, "user.artifact.aliases", b"best,candidate")
    os.setxattr(d, "user.artifact.tags", b"t1")
    assert oserror(lambda: os.setxattr(d, "user.artifact.metadata", b"[1]")) == errno.EINVAL
    assert oserror(lambda: os.setxattr(d, "user.artifact.aliases", b"v3")) == errno.EINVAL
    assert os.getxattr(d, "user.artifact.aliases") == b"best,candidate"
    with open(f"{d}/n", "wb") as f:
        f.write(b"n")
    done = sync(m, d, "--tag", "t2", "--metadata", "epoch=3", "--metadata", "note=text", "--description", "cli")
    assert done.stdout == "ds:v1\n"
    info = Registry.open(store).version("proj", "ds", 1)
    assert info.description == "cli" and info.metadata == {"lr": 0.1, "epoch": 3, "note": "text"}
    assert info.tags == ["t1", "t2"] and set(info.aliases) == {"best", "candidate", "latest"}
    with pytest.raises(OSError):
        os.getxattr(d, "user.artifact.aliases")     # used once, then cleared


def test_a_sync_equal_to_latest_keeps_pending_metadata_and_says_so(store, mount_factory):
    """Content equal to latest publishes no version (as `put` and W&B): aliases
    and tags go to latest, but description and metadata are neither set on it
    nor dropped from the draft; a note says so.  Too many metadata keys are
    refused at setxattr (EINVAL), not at every later sync."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    many = json.dumps({f"k{i}": i for i in range(101)}).encode()
    assert oserror(lambda: os.setxattr(d, "user.artifact.metadata", many)) == errno.EINVAL
    os.setxattr(d, "user.artifact.metadata", b'{"acc": 0.99}')
    os.setxattr(d, "user.artifact.description", b"final")
    done = sync(m, d, "--alias", "best")
    assert done.stdout == "ds:v0 (unchanged)\n"
    assert "description and metadata stay as they were" in done.stderr
    info = Registry.open(store).version("proj", "ds", 0)
    assert info.metadata == {} and info.description is None and "best" in info.aliases
    assert os.getxattr(d, "user.artifact.metadata") == b'{"acc": 0.99}'
    with open(f"{d}/n", "wb") as f:
        f.write(b"n")
    assert sync(m, d).stdout == "ds:v1\n"
    info = Registry.open(store).version("proj", "ds", 1)
    assert info.metadata == {"acc": 0.99} and info.description == "final"


def test_a_version_folders_aliases_xattr_follows_a_link_moved_through_the_mount(store, mount_factory, tmp_path):
    """The xattrs of a version folder are re-read every --refresh seconds, but an
    alias moved through this very mount shows there at once, as its link does."""
    publish(Registry.open(store), str(tmp_path / "pub"), "ds", {"top": b"v1"})
    m = mount_factory(store, "--refresh", "3600")
    c = m.p("ds")

    def aliases(version: str) -> bytes:
        return os.getxattr(f"{c}/{version}", "user.artifact.aliases")
    assert (aliases("ds:v0"), aliases("ds:v1")) == (b"", b"latest")
    os.symlink("ds:v1", f"{c}/ds:best")
    assert aliases("ds:v1") == b"best,latest"
    assert os.system(f"cd '{c}' && ln -sfn ds:v0 ds:best") == 0
    assert (aliases("ds:v0"), aliases("ds:v1")) == (b"best", b"latest")


def test_aliases_through_symlinks(store, mount_factory, tmp_path):
    reg = Registry.open(store)
    publish(reg, str(tmp_path / "pub"), "ds", {"top": b"v1"})
    m = mount_factory(store, "--refresh", "1")
    c = m.p("ds")
    os.symlink("ds:v0", f"{c}/ds:best")
    assert reg.aliases("proj", "ds")["best"] == 0 and os.readlink(f"{c}/ds:best") == "ds:v0"
    assert oserror(lambda: os.symlink("ds:v1", f"{c}/ds:best")) == errno.EEXIST
    assert os.system(f"cd '{c}' && ln -sfn ds:v1 ds:best") == 0  # a temporary link renamed over
    assert reg.aliases("proj", "ds")["best"] == 1
    wait_for(lambda: os.readlink(f"{c}/ds:best") == "ds:v1", 60, "the link to move")
    os.symlink("ds:latest", f"{c}/ds:pinned")
    assert reg.aliases("proj", "ds")["pinned"] == 1
    os.unlink(f"{c}/ds:pinned")
    assert "pinned" not in reg.aliases("proj", "ds")
    assert oserror(lambda: os.unlink(f"{c}/ds:latest")) == errno.EPERM
    os.symlink("ds:v0", f"{c}/tmp-link")            # what ln -sfn ds:v0 ds:latest does
    assert oserror(lambda: os.rename(f"{c}/tmp-link", f"{c}/ds:latest")) == errno.EPERM
    os.unlink(f"{c}/tmp-link")
    assert oserror(lambda: os.symlink("ds:v9", f"{c}/ds:nine")) == errno.ENOENT
    assert oserror(lambda: os.symlink("other:v0", f"{c}/ds:x")) == errno.EINVAL
    assert oserror(lambda: os.unlink(f"{c}/ds:nothere")) == errno.ENOENT
    os.symlink("ds@v0", f"{c}/ds@old")  # the spelling without ':' makes aliases too
    assert reg.aliases("proj", "ds")["old"] == 0 and os.readlink(f"{c}/ds@old") == "ds@v0"
    assert os.readlink(f"{c}/ds:old") == "ds:v0"
    assert oserror(lambda: os.symlink("ds:v0", f"{c}/ds@v9")) == errno.EPERM
    os.unlink(f"{c}/ds@old")
    assert "old" not in reg.aliases("proj", "ds")
    assert not [n for n in os.listdir(c) if not n.startswith("ds:") and n != "draft"]


def test_sync_paths_errors_and_conflicts(store, mount_factory, tmp_path):
    m = mount_factory(store, "--refresh", "1")
    d = m.p("ds", "draft")
    with open(f"{d}/a/x", "wb") as f:
        f.write(b"mine")
    publish(Registry.open(store), str(tmp_path / "pub"), "ds", {"a/x": b"theirs", "other": b"o"})
    done = sync(m, m.path, ok=False)                # the mountpoint: every dirty draft
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "conflict" in done.stderr and "a/x" in done.stderr
    assert open(f"{d}/a/x", "rb").read() == b"mine", "the draft is kept"
    with open(f"{d}/a/x", "wb") as f:               # resolve: take theirs, keep another change
        f.write(b"theirs")
    with open(f"{d}/mine", "wb") as f:
        f.write(b"m")
    os.chdir(d)
    try:
        assert sync(m).stdout == "ds:v2\n"          # default: the current directory
    finally:
        os.chdir(tmp_path)
    assert sorted(os.listdir(d)) == ["a", "b", "mine", "other", "top"], "their file shows in the draft"
    assert version_files(Registry.open(store), "ds", 2)["other"] == (b"o", False)
    assert sync(m, m.p("ds", "ds:v0"), ok=False).returncode != 0
    assert "not inside an artifactfs mount" in sync(m, str(tmp_path), ok=False).stderr
    bad = sync(m, d, "--alias", "v7", ok=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    missing = cli("sync", m.p("nope"), env=m.env)
    assert missing.returncode == 1 and "nope" in missing.stderr
    with open(f"{d}/later", "wb") as f:
        f.write(b"l")
    typo = cli("sync", os.path.join(d, "no-such-file"), env=m.env)  # a typo commits nothing
    assert typo.returncode == 1 and typo.stderr == f"Error: {d}/no-such-file: no such file or folder\n"
    assert Registry.open(store).latest("proj", "ds") == 2
    os.kill(m.pid, signal.SIGKILL)  # a dead daemon: sync says so, and how to get the drafts back
    wait_for(lambda: errno_of(lambda: os.stat(m.path)) == errno.ENOTCONN, 60, "the mount to lose its daemon")
    gone = cli("sync", d, env=m.env)
    assert gone.returncode == 1 and "is gone" in gone.stderr and "artifactfs mount" in gone.stderr


def test_stat_of_a_placeholder_and_open_descriptors_across_copy_up(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    st = os.stat(f"{d}/a/y")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 10000
    with open(f"{d}/a/y", "rb", buffering=0) as reader:  # opened while still the base file
        assert reader.read(2) == b"ay"
        with open(f"{d}/a/y", "r+b") as writer:
            writer.write(b"ZZ")
        reader.seek(0)
        assert reader.read(4) == b"ZZay"


def test_unlinked_and_replaced_files_stay_readable_while_open(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    base = open(f"{d}/top", "rb", buffering=0)      # a base file, then unlinked
    with open(f"{d}/real", "wb") as f:
        f.write(b"real bytes")
    real = open(f"{d}/real", "rb", buffering=0)     # a staged file, then replaced by rename
    os.unlink(f"{d}/top")
    with open(f"{d}/other", "wb") as f:
        f.write(b"other")
    os.rename(f"{d}/other", f"{d}/real")
    os.rename(f"{d}/b", f"{d}/a/b2")                 # a folder moved after names were detached
    os.rename(f"{d}/a", f"{d}/top")                  # onto the unlinked file's name
    assert os.fstat(base.fileno()).st_size == 1 and base.read() == b"t"
    assert os.fstat(real.fileno()).st_size == 10 and real.read() == b"real bytes"
    base.close()
    real.close()
    assert sorted(os.listdir(d)) == ["real", "top"] and sorted(os.listdir(f"{d}/top")) == ["b2", "x", "y"]
    assert sync(m, d).stdout == "ds:v1\n"
    assert sorted(version_files(Registry.open(store), "ds", 1)) == ["real", "top/b2/c/d", "top/x", "top/y"]
    assert "ERROR" not in m.log


def test_read_only_mount_has_no_drafts(store, mount_factory):
    m = mount_factory(store, "--read-only")
    assert sorted(os.listdir(m.p("ds"))) == ["ds:latest", "ds:v0"]
    assert oserror(lambda: os.mkdir(m.p("new"))) == errno.EROFS
    assert cli("sync", m.path, env=m.env).returncode == 1
    st = os.statvfs(m.path)  # df shows how full the chunk cache is, not a full disk
    assert st.f_blocks * st.f_frsize == 10 << 30 and st.f_bavail == st.f_bfree > st.f_blocks // 2


def test_free_space_is_the_staging_filesystems(store, mount_factory):
    """statfs through the mount reports the disk drafts are staged on, so df does not
    show the mount full and copy tools that check free space go ahead."""
    m = mount_factory(store)
    got, local = os.statvfs(m.path), os.statvfs(m.env["XDG_STATE_HOME"])
    assert got.f_bavail > 0 and got.f_blocks > 0
    assert got.f_frsize == local.f_frsize and got.f_blocks == local.f_blocks
    assert abs(got.f_bavail - local.f_bavail) * local.f_frsize < 64 << 20
    df = subprocess.run(["df", "-P", "-B1", m.path], capture_output=True, text=True, check=True)
    total, used, avail = (int(x) for x in df.stdout.splitlines()[1].split()[1:4])
    assert total == local.f_blocks * local.f_frsize and avail > 0 and used < total


def test_committed_files_leave_the_staging_tree(store, mount_factory, tmp_path):
    """After sync, files written through the mount hold no staging space of their
    own (a file of one chunk is the local store's blob: one inode), also a file
    still open for writing (not changed since it was opened, so sync publishes
    it: docs/drafts.md): the same inode takes its later writes (the data file
    copied first, the blob never changes), which the next sync commits."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    payload = randbytes(3 << 20)
    with open(f"{d}/big.bin", "wb") as f:
        f.write(payload)
    os.makedirs(f"{d}/new/deep")
    with open(f"{d}/new/deep/f", "wb") as f:
        f.write(b"deep")
    with open(f"{d}/held", "wb") as f:
        f.write(b"first ")
    held = open(f"{d}/held", "ab", buffering=0)
    assert sync(m, d).stdout == "ds:v1\n"

    def staged() -> list[os.stat_result]:
        return [os.stat(os.path.join(p, n)) for p, _, names in os.walk(m.env["XDG_STATE_HOME"]) for n in names
                if p.endswith("/data")]
    assert len(staged()) == 3 and all(st.st_nlink == 2 for st in staged()), "each one is its blob"
    assert open(f"{d}/big.bin", "rb").read() == payload
    assert open(f"{d}/new/deep/f", "rb").read() == b"deep"
    held.write(b"second")
    held.close()
    with open(f"{d}/big.bin", "r+b") as f:                   # and copied up again when written
        f.write(b"X")
    assert sync(m, d).stdout == "ds:v2\n"
    got = version_files(Registry.open(store), "ds", 2)
    assert got["held"] == (b"first second", False) and got["big.bin"] == (b"X" + payload[1:], False)


def test_big_files_written_in_order_reach_the_store_before_sync(store, mount_factory):
    """Each complete chunk of a big file written in order is in the store before
    any sync (issue 10: sync then has little left to do); a file rewritten in the
    middle afterwards is still published with the bytes it holds at sync."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    chunks = 2
    first, second = randbytes(chunks * CHUNK_SIZE + 5), randbytes(chunks * CHUNK_SIZE + 5)
    for name, payload in (("first.bin", first), ("second.bin", second)):
        with open(f"{d}/{name}", "wb") as f:
            for off in range(0, len(payload), 1 << 20):
                f.write(payload[off:off + (1 << 20)])
    keys = [xxhash.xxh3_128_hexdigest(p[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]) for p in (first, second)
            for i in range(chunks)]
    wait_for(lambda: all(os.path.exists(os.path.join(store, blob_key(k))) for k in keys), 60,
             "the complete chunks stored ahead")
    with open(f"{d}/second.bin", "r+b") as f:
        f.seek(CHUNK_SIZE // 2)
        f.write(b"REWRITTEN")
    assert sync(m, d).stdout == "ds:v1\n"
    got = version_files(Registry.open(store), "ds", 1)
    mid = CHUNK_SIZE // 2
    assert got["first.bin"] == (first, False)
    assert got["second.bin"] == (second[:mid] + b"REWRITTEN" + second[mid + 9:], False)
    for dirpath, _, names in os.walk(os.path.join(store, "blobs")):  # used or not, each blob is its key's bytes
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert xxhash.xxh3_128_hexdigest(f.read()) == name


def test_a_sync_client_that_leaves_does_not_take_the_mount_down(store, mount_factory):
    """`timeout 2 artifactfs sync` or Ctrl-C while the daemon commits: the commit
    completes, its answer has nowhere to go, and the mount keeps serving."""
    m = mount_factory(store, "--refresh", "1")
    with open(m.p("ds", "draft", "new.txt"), "wb") as f:
        f.write(b"new")
    address = os.getxattr(m.p(), "user.artifactfs.control").decode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sockaddr(address))
        s.sendall(json.dumps({"op": "sync", "collections": ["ds"]}).encode() + b"\n")
    reg = Registry.open(store)
    wait_for(lambda: reg.versions("proj", "ds") == [0, 1], timeout=60, what="the commit of the abandoned sync")
    wait_for(lambda: os.path.exists(m.p("ds", "ds@v1", "new.txt")), timeout=60, what="the mount to show v1")
    assert open(m.p("ds", "ds@v1", "new.txt"), "rb").read() == b"new"  # the daemon still answers
    with open(m.p("ds", "draft", "later.txt"), "wb") as f:
        f.write(b"later")
    assert sync(m, m.p("ds")).stdout.splitlines() == ["ds:v2"]


def test_umount_commits_first_and_says_what_it_could_not(store, mount_factory):
    """umount prints each version it commits; a draft it cannot commit (a conflict
    with another mount's commit) is named, kept, and umount exits 1, unmounted."""
    m1 = mount_factory(store, name="m1")
    m2 = mount_factory(store, name="m2")
    for m, text in ((m1, b"one"), (m2, b"two")):
        with open(m.p("ds", "draft", "top"), "wb") as f:
            f.write(text)
    assert sync(m1, m1.p("ds")).stdout.splitlines() == ["ds:v1"]
    done = m2.umount()
    assert done.returncode == 1 and "conflict" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not is_mounted(m2.path)
    with open(m1.p("ds", "draft", "new.txt"), "wb") as f:
        f.write(b"new")
    done = m1.umount()
    assert done.returncode == 0 and done.stdout.splitlines() == ["ds:v2"], done.stderr
    assert Registry.open(store).versions("proj", "ds") == [0, 1, 2]
