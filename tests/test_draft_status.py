"""`artifactfs status` (what sync would publish, drafts/status.py) and
`artifactfs discard` (every change of a draft goes and it shows its
collection's latest version again, drafts/revert.py), through a real mount;
open files keep their bytes as unlinked files do."""
from __future__ import annotations

import errno
import os

import pytest
from draft_helpers import dir_files, publish, version_files
from mountutil import cli, mount_factory, wait_for  # noqa: F401  (fixture)
from test_draft_mount import BASE, store  # noqa: F401  (fixture)

from artifactfs.registry.versions import Registry


def staged_files(m) -> list[str]:
    """The data files of the mount's drafts (what staging holds on disk)."""
    out = []
    for dirpath, _, names in os.walk(m.env["XDG_STATE_HOME"]):
        if os.path.basename(dirpath) == "data":
            out += [os.path.join(dirpath, n) for n in names]
    return out


def test_discard_shows_latest_again_and_keeps_open_files(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    with open(f"{d}/a/x", "ab") as f:                # copy-up of a base file
        f.write(b"+more")
    with open(f"{d}/new", "wb") as f:
        f.write(b"new bytes")
    os.makedirs(f"{d}/made/deeper")
    with open(f"{d}/made/deeper/f", "wb") as f:
        f.write(b"f")
    os.remove(f"{d}/b/c/d")                          # a whiteout
    os.rename(f"{d}/top", f"{d}/a/top2")
    os.chmod(f"{d}/a/y", 0o700)
    os.link(f"{d}/new", f"{d}/new.hard")
    os.mkfifo(f"{d}/pipe")                           # what a version cannot hold goes too
    os.setxattr(d, "user.artifact.aliases", b"best")
    held = open(f"{d}/new", "rb")                    # an open file keeps its bytes
    changed = open(f"{d}/a/x", "rb")                 # ... a changed base file too; its name shows the base
    cwd = os.open(f"{d}/made", os.O_RDONLY)          # a folder someone is in
    try:
        assert len(staged_files(m)) >= 3
        done = cli("discard", d, env=m.env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ds: changes discarded; the draft shows ds:v0"
        expected = {k: (v if isinstance(v, tuple) else (v, False)) for k, v in BASE.items()}
        assert dir_files(d) == expected                # at once: no stale dentry or page
        assert sorted(os.listdir(d)) == ["a", "b", "top"]
        assert os.stat(f"{d}/a/y").st_mode & 0o777 == 0o755
        with pytest.raises(OSError) as e:
            os.getxattr(d, "user.artifact.aliases")  # nothing pending for the next commit
        assert e.value.errno == errno.ENODATA
        assert held.read() == b"new bytes"
        assert changed.read() == b"ax+more"
        assert os.fstat(cwd).st_nlink == 0             # a removed folder, as after rm -r
        done = cli("sync", d, env=m.env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ds:v0 (unchanged)"
    finally:
        held.close()
        changed.close()
        os.close(cwd)
    # the staged bytes go once nobody holds them
    wait_for(lambda: not staged_files(m), 30, "the discarded data files to be removed")


def test_discard_follows_latest_and_reports_errors(store, mount_factory, tmp_path):
    m = mount_factory(store, "--refresh", "1")
    d = m.p("ds", "draft")
    with open(f"{d}/mine", "wb") as f:
        f.write(b"mine")
    reg = Registry.open(store)
    v1 = publish(reg, str(tmp_path / "pub2"), "ds", {"theirs": b"theirs"})   # another writer
    done = cli("discard", m.p("ds"), env=m.env)                              # a collection folder works too
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ds: changes discarded; the draft shows ds:v{v1}"
    expected = version_files(reg, "ds", v1)
    assert dir_files(d) == expected
    again = cli("discard", d, env=m.env)
    assert again.returncode == 0 and again.stdout.strip() == f"ds: no changes to discard (the draft shows ds:v{v1})"

    os.mkdir(m.p("fresh"))                              # a new collection: no version to go back to
    with open(m.p("fresh", "draft", "f"), "wb") as f:
        f.write(b"f")
    bad = cli("discard", m.p("fresh", "draft"), env=m.env)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("Error: fresh: no version to go back to; remove the collection's folder (rm -r) "
                                  "to drop its draft")
    assert os.path.exists(m.p("fresh", "draft", "f"))
    for args, message in [((m.path,), "discard takes draft or collection folders, not a whole mount"),
                          ((str(tmp_path),), "is not inside an artifactfs mount"),
                          ((), "Missing argument")]:
        done = cli("discard", *args, env=m.env)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_status_shows_what_sync_would_publish(store, mount_factory, tmp_path):
    """`artifactfs status`: A/M/D per path as a commit finds the changes (a file
    written back with its bytes is no change), what is pending, what a version
    cannot hold, and a newer latest; nothing is stored."""
    m = mount_factory(store, "--refresh", "1")
    d = m.p("ds", "draft")
    done = cli("status", d, env=m.env)
    assert done.returncode == 0 and done.stdout == "ds: draft of ds:v0: no changes\n"
    with open(f"{d}/a/x", "ab") as f:
        f.write(b"+more")
    with open(f"{d}/top", "wb") as f:              # the same bytes again: no change
        f.write(BASE["top"])
    os.utime(f"{d}/top", ns=(os.stat(m.p("ds", "ds:v0", "top")).st_mtime_ns,) * 2)
    with open(f"{d}/new", "wb") as f:
        f.write(b"new")
    os.remove(f"{d}/b/c/d")
    os.mkfifo(f"{d}/pipe")
    os.setxattr(d, "user.artifact.aliases", b"best")
    reg = Registry.open(store)
    v1 = publish(reg, str(tmp_path / "pub2"), "ds", {"theirs": b"theirs"})
    blobs = sorted(reg.store.list("blobs/"))
    done = cli("status", m.p("ds"), env=m.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"ds: draft of ds:v0; latest is ds:v{v1}, sync applies the changes onto it: 3 changes",
        "M a/x", "D b/c/d", "A new",
        "for the next version: aliases best",
        "kept in the draft only (a version cannot hold them): fifos: pipe"]  # b/c stays, empty
    assert sorted(reg.store.list("blobs/")) == blobs  # nothing stored by status
    assert cli("sync", d, env=m.env).stdout == f"ds:v{v1 + 1}\n"
    assert os.listdir(m.p("ds", f"ds:v{v1 + 1}", "b", "c")) == []  # the emptied folder is in the version
    assert cli("status", m.path, env=m.env).stdout == ""   # the mountpoint: every draft with changes (none)


def test_latest_names_the_new_version_as_soon_as_sync_returns(store, mount_factory):
    """A script that runs `sync` and then reads NAME:latest must get the version
    sync printed: the alias dentries are dropped before sync's reply, not
    asynchronously after it (a newcomer saw latest lag behind their own sync)."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    for i in range(8):
        assert os.readlink(m.p("ds", "ds:latest")) == f"ds:v{i}"   # the kernel holds the dentry
        assert os.readlink(m.p("ds", "ds@latest")) == f"ds@v{i}"
        with open(f"{d}/round", "wb") as f:
            f.write(b"%d" % i)
        assert cli("sync", d, env=m.env).stdout == f"ds:v{i + 1}\n"
        assert os.readlink(m.p("ds", "ds:latest")) == f"ds:v{i + 1}"
        assert open(m.p("ds", "ds:latest", "round"), "rb").read() == b"%d" % i
