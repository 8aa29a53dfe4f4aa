"""Files in draft/ are inodes: an open file keeps
reading and writing the same file through truncation by another writer, sync,
rm, rename over it; an unlinked open file keeps its bytes; names are checked
with the errno ext4 would give; a store made again at the same URL starts a
fresh draft and the old one is set aside with its files."""
from __future__ import annotations

import errno
import glob
import os
import subprocess
import tempfile

import pytest
from draft_helpers import errno_of, publish, version_files
from mountutil import cli, mount_factory, mounted  # noqa: F401  (fixture)

from artifactfs.registry.versions import Registry


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", {"f": b"base-content-d", "g": b"g"})
    return url


def sync(m) -> None:
    done = cli("sync", m.p("ds", "draft"), env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("then", ["sync", "rm", "rename over"])
def test_a_reader_sees_the_writer_of_the_same_inode(store, mount_factory, then):
    """Input 1: R reads f; W opens it O_WRONLY|O_TRUNC, writes NEW-d, closes; then
    sync (or rm f, or another file renamed over f): R reads b'NEW-d'."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    r = os.open(f"{d}/f", os.O_RDONLY)
    assert os.pread(r, 100, 0) == b"base-content-d"
    w = os.open(f"{d}/f", os.O_WRONLY | os.O_TRUNC)
    os.write(w, b"NEW-d")
    os.close(w)
    if then == "sync":
        sync(m)
        assert version_files(Registry.open(store), "ds", 1)["f"] == (b"NEW-d", False)
    elif then == "rm":
        os.unlink(f"{d}/f")
    else:
        with open(f"{d}/other", "wb") as o:
            o.write(b"replacement")
        os.rename(f"{d}/other", f"{d}/f")
        assert open(f"{d}/f", "rb").read() == b"replacement"
    assert os.pread(r, 100, 0) == b"NEW-d"
    assert os.fstat(r).st_size == 5
    os.close(r)


def test_an_unlinked_open_file_keeps_its_bytes(store, mount_factory):
    """Input 2, and tempfile.TemporaryFile / SpooledTemporaryFile roll-over."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    f = open(f"{d}/x", "w+b")
    os.unlink(f"{d}/x")
    f.write(b"hello")
    f.flush()
    f.seek(0)
    assert f.read() == b"hello" and os.fstat(f.fileno()).st_size == 5
    f.close()
    with tempfile.TemporaryFile(dir=d) as t:
        t.write(b"x" * 100_000)
        t.seek(0)
        assert t.read() == b"x" * 100_000
    with tempfile.SpooledTemporaryFile(max_size=10, dir=d) as s:
        s.write(b"rolled over to a real file")
        s.seek(0)
        assert s.read() == b"rolled over to a real file"
    g = open(f"{d}/g", "r+b")             # a base file, unlinked while open, then written
    os.unlink(f"{d}/g")
    g.write(b"G!")
    g.flush()
    g.seek(0)
    assert g.read() == b"G!"
    sync(m)
    g.seek(0)
    assert g.read() == b"G!", "still the same file after a sync"
    g.close()
    assert sorted(os.listdir(d)) == ["f"]
    assert sorted(version_files(Registry.open(store), "ds", 1)) == ["f"]


def test_names(store, mount_factory):
    """Input 5: a name that is not UTF-8 is EINVAL with one log line; O_RDONLY|O_TRUNC
    on a version file is EROFS; a 256-byte name is ENAMETOOLONG everywhere."""
    m = mount_factory(store)
    d = m.p("ds", "draft").encode()
    bad = d + b"/bad\xe9"
    assert errno_of(lambda: open(bad, "wb")) == errno.EINVAL
    assert errno_of(lambda: os.mkdir(bad)) == errno.EINVAL
    assert errno_of(lambda: os.rename(d + b"/f", bad)) == errno.EINVAL
    assert m.log.count("not valid UTF-8") == 3 and "Traceback" not in m.log
    version_file = m.p("ds", "ds:v0", "f")
    assert errno_of(lambda: os.open(version_file, os.O_RDONLY | os.O_TRUNC)) == errno.EROFS
    assert open(version_file, "rb").read() == b"base-content-d"
    long = "n" * 256
    assert errno_of(lambda: os.stat(m.p("ds", "ds:v0", long))) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.stat(m.p("ds", "draft", long))) == errno.ENAMETOOLONG
    assert errno_of(lambda: open(m.p("ds", "draft", long), "wb")) == errno.ENAMETOOLONG
    ok = "é" * 127
    with open(m.p("ds", "draft", ok), "wb") as f:  # 254 bytes
        f.write(b"ok")
    assert ok in os.listdir(m.p("ds", "draft"))


def test_deep_trees(store, mount_factory):
    """Deeper than PATH_MAX below the draft: nothing in staging depends on paths."""
    m = mount_factory(store)
    os.chdir(m.p("ds", "draft"))
    try:
        for _ in range(40):
            os.mkdir("d" * 200)
            os.chdir("d" * 200)
        with open("leaf", "wb") as f:
            f.write(b"deep")
        assert open("leaf", "rb").read() == b"deep"
    finally:
        os.chdir("/")
    sync(m)
    files = version_files(Registry.open(store), "ds", 1)
    assert files["/".join(["d" * 200] * 40 + ["leaf"])] == (b"deep", False)


def test_a_store_made_again_gets_a_fresh_draft(tmp_path, mount_factory):
    """Input 6: the old draft's base is gone with its store; draft/ works on the new one."""
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", {"f": b"one"})
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with mounted(url, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "mine"), "wb") as f:
            f.write(b"staged before the store went")
        os.kill(m.pid, 9)  # no commit at unmount: the draft stays
    subprocess.run(["rm", "-rf", url], check=True)
    publish(Registry.open(url, create=True), str(tmp_path / "pub2"), "ds", {"f": b"two"})
    with mounted(url, tmp_path / "mnt", env=env) as m:
        d = m.p("ds", "draft")
        assert sorted(os.listdir(d)) == ["f"] and open(f"{d}/f", "rb").read() == b"two"
        with open(f"{d}/new", "wb") as f:
            f.write(b"n")
        sync(m)
        assert "earlier store" in m.log
    assert glob.glob(f"{env['XDG_STATE_HOME']}/artifactfs/drafts/*/proj/0/ds/data/*"), "the old draft is still there"
    assert version_files(Registry.open(url), "ds", 1) == {"f": (b"two", False), "new": (b"n", False)}


def test_a_draft_whose_base_was_deleted_is_set_aside(tmp_path, mount_factory):
    """Same store, but the draft's base version is gone: one log line, the staged
    files kept where the user can find them, and a fresh draft."""
    url = str(tmp_path / "store")
    reg = Registry.open(url, create=True)
    publish(reg, str(tmp_path / "pub"), "ds", {"f": b"one"})
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with mounted(url, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "mine"), "wb") as f:
            f.write(b"kept for the user")
        os.kill(m.pid, 9)  # no commit at unmount: the draft stays
    subprocess.run(["rm", "-rf", str(tmp_path / "store" / "projects")], check=True)
    publish(reg, str(tmp_path / "pub2"), "ds", {"f": b"other"})
    with mounted(url, tmp_path / "mnt", env=env) as m:
        assert sorted(os.listdir(m.p("ds", "draft"))) == ["f"]
    state = env["XDG_STATE_HOME"]
    kept = glob.glob(f"{state}/artifactfs/drafts/*/proj/set-aside/ds-*/files/mine")
    assert len(kept) == 1 and open(kept[0], "rb").read() == b"kept for the user"
    logs = "".join(open(p).read() for p in glob.glob(f"{state}/artifactfs/logs/*.log"))
    assert logs.count("was set aside") == 1
