"""`artifactfs discard`: every change of a draft goes and it shows its
collection's latest version again (drafts/revert.py), through a real mount;
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
