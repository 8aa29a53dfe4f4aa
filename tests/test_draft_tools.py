"""Everyday tools inside draft/, as root: rsync -a, cp -a,
tar -xf and unzip of a tree with symlinks, hard links, executables and files of
another user exit 0; the committed version holds that tree (file contents,
executable bits, mtimes, symlinks, both names of a hard link); a second
rsync -a after the sync copies nothing; fallocate(2) through posix_fallocate."""
from __future__ import annotations

import os
import stat
import subprocess
import zipfile

import pytest
from conftest import randbytes, skip_or_fail
from draft_helpers import publish
from mountutil import cli, mount_factory  # noqa: F401  (fixture)

from artifactfs.registry.manifest import FileEntry, SymlinkEntry, walk
from artifactfs.registry.versions import Registry

OTHER_UID = 1000
MTIME = 1_600_000_000_123_456_789


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", {"old": b"old"})
    return url


@pytest.fixture
def src(tmp_path) -> str:
    """A tree with a symlink (relative and dangling), a hard link, an executable,
    a file of another user, and fixed mtimes."""
    if os.getuid() != 0:
        skip_or_fail("the tools must run as root (files of another user)")
    root = tmp_path / "src"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "data.bin").write_bytes(randbytes(70_000))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "sub" / "deep" / "theirs.txt").write_text("owned by someone else")
    os.chown(root / "sub" / "deep" / "theirs.txt", OTHER_UID, OTHER_UID)
    os.link(root / "data.bin", root / "sub" / "hard.bin")
    os.symlink("../data.bin", root / "sub" / "link")
    os.symlink("nowhere", root / "dangling")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames:
            os.utime(os.path.join(dirpath, n), ns=(MTIME, MTIME), follow_symlinks=False)
    return str(root)


def committed(store: str, version: int) -> dict[str, object]:
    """path -> (content digest, executable, mtime) or ('->', target)."""
    reg = Registry.open(store)
    out: dict[str, object] = {}
    for path, e in walk(reg, reg.version("proj", "ds", version).root):
        out[path] = ("->", e.target) if isinstance(e, SymlinkEntry) else (e.digest, e.executable, e.mtime_ns)
    return out


def expected(src: str) -> dict[str, object]:
    from artifactfs.chunks.upload import upload_file
    out: dict[str, object] = {}
    for dirpath, _, filenames in os.walk(src):
        for n in filenames:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, src)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("->", os.readlink(full))
            else:
                e: FileEntry = upload_file(None, full)
                out[rel] = (e.digest, bool(st.st_mode & 0o100), st.st_mtime_ns)
    return out


def run(*cmd: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, (cmd, done.returncode, done.stderr)
    return done


def sync(m) -> str:
    done = cli("sync", m.p("ds", "draft"), env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_draft_tree(d: str, hard_links: bool = True) -> None:
    assert os.readlink(f"{d}/sub/link") == "../data.bin" and os.readlink(f"{d}/dangling") == "nowhere"
    if hard_links:  # (rsync -a without -H makes two files)
        assert os.stat(f"{d}/data.bin").st_nlink == 2
        assert os.stat(f"{d}/data.bin").st_ino == os.stat(f"{d}/sub/hard.bin").st_ino
    theirs = os.stat(f"{d}/sub/deep/theirs.txt")
    assert (theirs.st_uid, theirs.st_gid) == (OTHER_UID, OTHER_UID)
    assert os.stat(f"{d}/run.sh").st_mode & 0o777 == 0o755
    assert os.lstat(f"{d}/data.bin").st_mtime_ns == MTIME


def test_rsync_a_twice(store, src, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    run("rsync", "-a", src + "/", d + "/")
    check_draft_tree(d, hard_links=False)
    out = sync(m)
    assert out == "ds:v1\n"
    assert committed(store, 1) == {**expected(src), "old": committed(store, 0)["old"]}
    again = run("rsync", "-a", "--itemize-changes", src + "/", d + "/").stdout
    assert again == "", "nothing copied again: sizes and mtimes match after the sync"
    assert sync(m) == "ds:v1 (unchanged)\n"


@pytest.mark.parametrize("tool", ["cp -a", "tar -xpf"])
def test_cp_a_and_tar_keep_hard_links(store, src, mount_factory, tmp_path, tool):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    if tool == "cp -a":
        run("cp", "-a", src + "/.", d + "/")
    else:
        archive = str(tmp_path / "tree.tar")
        run("tar", "--format=posix", "-cf", archive, "-C", src, ".")  # (pax keeps mtimes to the ns)
        run("tar", "-xpf", archive, "-C", d)
    check_draft_tree(d)
    assert sync(m) == "ds:v1\n"
    assert committed(store, 1) == {**expected(src), "old": committed(store, 0)["old"]}


def test_unzip_with_symlinks(store, src, mount_factory, tmp_path):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    archive = str(tmp_path / "tree.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for rel in ("data.bin", "run.sh", "sub/link"):
            full = os.path.join(src, rel)
            info = zipfile.ZipInfo(rel, (2020, 1, 2, 3, 4, 6))
            st = os.lstat(full)
            info.create_system = 3  # unix: the mode, symlink bit included, is in external_attr
            info.external_attr = st.st_mode << 16
            z.writestr(info, os.readlink(full) if stat.S_ISLNK(st.st_mode) else open(full, "rb").read())
    done = run("unzip", "-q", archive, "-d", d)
    assert done.stderr == ""
    assert os.readlink(f"{d}/sub/link") == "../data.bin" and os.stat(f"{d}/run.sh").st_mode & 0o111
    assert sync(m) == "ds:v1\n"
    got = committed(store, 1)
    assert got["sub/link"] == ("->", "../data.bin") and got["run.sh"][1] is True


def test_fallocate_and_what_a_version_leaves_out(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    fd = os.open(f"{d}/pre", os.O_CREAT | os.O_RDWR, 0o644)
    os.posix_fallocate(fd, 0, 1 << 20)
    assert os.fstat(fd).st_size == 1 << 20
    os.close(fd)
    os.mkfifo(f"{d}/fifo")
    os.mknod(f"{d}/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chown(f"{d}/old", OTHER_UID, OTHER_UID)
    os.chmod(f"{d}/pre", 0o4755)
    with open(f"{d}/private", "wb") as f:  # a 0600 checkpoint: nothing a version would mean by it is lost
        f.write(b"p")
    os.chmod(f"{d}/private", 0o600)
    assert stat.S_ISFIFO(os.stat(f"{d}/fifo").st_mode) and os.stat(f"{d}/null").st_rdev == os.makedev(1, 3)
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
    note = done.stderr.strip()
    assert note.count("\n") == 0 and "fifos: fifo" in note and "devices: null" in note
    assert "kept in the draft only (a version cannot hold them): devices: null; fifos: fifo" in note
    assert "published without (a version keeps only the executable bit): ownership: old; " \
        "set-id and sticky bits: pre" in note and "private" not in note
    with open(f"{d}/more", "wb") as f:  # the next commit names only what changed since: fifo, device stay
        f.write(b"m")
    again = cli("sync", d, env=m.env, timeout=120)
    assert again.returncode == 0 and again.stdout == "ds:v2\n", again.stderr
    assert "fifos: fifo" in again.stderr and "ownership" not in again.stderr and "set-id" not in again.stderr
    assert cli("sync", d, env=m.env, timeout=120).stderr == "", "nothing published: no note"
    got = committed(store, 1)
    assert sorted(got) == ["old", "pre", "private"] and got["pre"][1] is True
    assert stat.S_ISFIFO(os.stat(f"{d}/fifo").st_mode), "kept in the draft"
    assert os.stat(f"{d}/old").st_uid == OTHER_UID and os.stat(f"{d}/pre").st_mode & 0o7777 == 0o4755
