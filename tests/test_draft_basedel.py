"""A draft whose base version is deleted while mounted (docs/drafts.md, "When the
base version is deleted"): what the draft shows does not change, open files keep
their inode and bytes, and sync (or the commit at unmount) publishes exactly what
the draft shows, as a new version.  Before, the draft went on showing the deleted
version's files and sync then published only the changes, dropping them (or an
untouched draft switched to the older version under its readers)."""
from __future__ import annotations

import glob
import os

from draft_helpers import dir_files, publish, version_files
from mountutil import Mount, cli, mount_factory, mounted, wait_for  # noqa: F401  (fixture)
from test_draft_mount import sync

from artifactfs.registry.versions import Registry

BIG = 20 * 1024 * 1024 + 12345  # three chunks: sealed one file per chunk on a local store


def delete(m, ref: str) -> None:
    done = cli("--store", m.store, "--project", "proj", "delete", ref, "--delete-aliases", env=m.env)
    assert done.returncode == 0, done.stderr


def status(m, path: str) -> str:
    done = cli("status", path, env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def versions_listed(m, name: str) -> list[str]:
    return sorted(n for n in os.listdir(m.p(name)) if n.startswith(f"{name}:v"))


def test_sync_after_the_base_is_deleted_publishes_what_the_draft_shows(tmp_path, mount_factory):
    url = str(tmp_path / "store")
    Registry.open(url, create=True)
    m = mount_factory(url, "--refresh", "1")
    os.mkdir(m.p("del1"))
    d = m.p("del1", "draft")
    with open(f"{d}/a.txt", "w") as f:
        f.write("keep\n")
    with open(f"{d}/big", "wb") as f:
        f.write(bytes(range(256)) * (BIG // 256) + b"t" * (BIG % 256))
    assert sync(m, d).stdout.strip() == "del1:v0"
    ino = os.stat(f"{d}/a.txt").st_ino
    held = open(f"{d}/a.txt", "rb")
    try:
        delete(m, "del1:v0")
        wait_for(lambda: versions_listed(m, "del1") == [], 30, "the mount to see v0 deleted")
        assert sorted(os.listdir(d)) == ["a.txt", "big"]
        assert os.stat(f"{d}/a.txt").st_ino == ino
        shown = status(m, d)
        assert "del1:v0, since deleted (no version is left)" in shown, shown
        assert "sync publishes everything the draft shows" in shown, shown
        with open(f"{d}/b.txt", "w") as f:
            f.write("b\n")
        assert sync(m, d).stdout.strip() == "del1:v1"
        reg = Registry.open(url)
        published = version_files(reg, "del1", 1)
        assert sorted(published) == ["a.txt", "b.txt", "big"]
        assert published["a.txt"][0] == b"keep\n" and len(published["big"][0]) == BIG
        assert sorted(os.listdir(d)) == ["a.txt", "b.txt", "big"]
        assert os.stat(f"{d}/a.txt").st_ino == ino       # the same inode, before and after the sync
        assert held.read() == b"keep\n"
        assert dir_files(d) == published
    finally:
        held.close()


def test_umount_after_the_base_is_deleted_publishes_what_the_draft_shows(tmp_path, mount_factory):
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", {"x": b"x0", "sub/y": b"y0"})
    publish(Registry.open(url), str(tmp_path / "pub"), "ds", {"x": b"x1"})
    m = mount_factory(url, "--refresh", "1")
    d = m.p("ds", "draft")
    with open(f"{d}/new", "wb") as f:
        f.write(b"n")
    delete(m, "ds:v1")  # latest moves back to v0
    wait_for(lambda: versions_listed(m, "ds") == ["ds:v0"], 30, "the mount to see v1 deleted")
    assert open(f"{d}/x", "rb").read() == b"x1"
    assert ("ds: draft of ds:v1, since deleted (latest is ds:v0, which `artifactfs discard` would show instead); "
            "sync publishes everything the draft shows as a new version: 1 change\nA new\n") == status(m, d)
    done = m.umount()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ds:v2"
    reg = Registry.open(url)
    assert version_files(reg, "ds", 2) == {"x": (b"x1", False), "sub/y": (b"y0", False), "new": (b"n", False)}


def test_an_untouched_draft_keeps_showing_its_deleted_base_until_discarded(tmp_path, mount_factory):
    """Deleting latest while an older version is left does not switch the draft
    under its readers: same names, inodes and bytes.  `artifactfs discard` is
    the way to show the older version; sync would publish the draft again."""
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", {"w": b"zero", "only0": b"o"})
    publish(Registry.open(url), str(tmp_path / "pub"), "ds", {"w": b"one", "only0": None, "only1": b"1"})
    m = mount_factory(url, "--refresh", "1")
    d = m.p("ds", "draft")
    assert sorted(os.listdir(d)) == ["only1", "w"]
    ino = os.stat(f"{d}/w").st_ino
    held = open(f"{d}/w", "rb")
    try:
        delete(m, "ds:v1")
        wait_for(lambda: versions_listed(m, "ds") == ["ds:v0"], 30, "the mount to see v1 deleted")
        os.listdir(m.p("ds"))  # (a lookup of the collection: where an untouched draft follows latest)
        assert sorted(os.listdir(d)) == ["only1", "w"]
        assert os.stat(f"{d}/w").st_ino == ino
        assert open(f"{d}/w", "rb").read() == b"one" and held.read() == b"one"
        done = cli("discard", d, env=m.env)
        assert done.returncode == 0, done.stderr
        assert sorted(os.listdir(d)) == ["only0", "w"] and open(f"{d}/w", "rb").read() == b"zero"
    finally:
        held.close()
    done = m.umount()
    assert done.returncode == 0, done.stderr
    assert Registry.open(url).versions("proj", "ds") == [0]  # nothing published by the unmount


def test_a_deleted_base_with_a_newer_latest_still_merges(tmp_path, mount_factory):
    """Another machine published v2 from v1, then v1 (the draft's base) was deleted:
    today's rules apply, the draft's changes go onto v2."""
    url = str(tmp_path / "store")
    reg = Registry.open(url, create=True)
    publish(reg, str(tmp_path / "pub"), "ds", {"x": b"x0", "y": b"y0"})
    m = mount_factory(url, "--refresh", "1")
    d = m.p("ds", "draft")
    with open(f"{d}/mine", "wb") as f:
        f.write(b"m")
    publish(reg, str(tmp_path / "pub2"), "ds", {"y": b"theirs"})
    delete(m, "ds:v0")
    wait_for(lambda: versions_listed(m, "ds") == ["ds:v1"], 30, "the mount to see v0 deleted")
    assert sync(m, d).stdout.strip() == "ds:v2"
    assert version_files(Registry.open(url), "ds", 2) == {"x": (b"x0", False), "y": (b"theirs", False),
                                                        "mine": (b"m", False)}
    wait_for(lambda: open(f"{d}/y", "rb").read() == b"theirs", 30, "the draft to show their y")


def test_a_draft_with_changes_on_a_base_deleted_while_unmounted_goes_on_from_it(tmp_path):
    """The next mount keeps such a draft as it was (its base's tree is still in the
    store) instead of setting it aside: sync then publishes what it shows."""
    url = str(tmp_path / "store")
    reg = Registry.open(url, create=True)
    publish(reg, str(tmp_path / "pub"), "ds", {"f": b"zero"})
    publish(reg, str(tmp_path / "pub"), "ds", {"f": b"one", "g": b"g"})
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with mounted(url, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "mine"), "wb") as f:
            f.write(b"kept")
        os.kill(m.pid, 9)  # no commit at unmount: the draft stays
    delete(Mount(str(tmp_path / "mnt"), url, env), "ds:v1")
    with mounted(url, tmp_path / "mnt", env=env) as m:
        d = m.p("ds", "draft")
        assert dir_files(d) == {"f": (b"one", False), "g": (b"g", False), "mine": (b"kept", False)}
        assert "ds:v1 of the draft of ds was deleted; the draft keeps showing it" in m.log
        assert sync(m, d).stdout.strip() == "ds:v2"
    assert version_files(Registry.open(url), "ds", 2) == {"f": (b"one", False), "g": (b"g", False),
                                                        "mine": (b"kept", False)}
    assert not glob.glob(f"{env['XDG_STATE_HOME']}/artifactfs/drafts/*/proj/set-aside/*")
