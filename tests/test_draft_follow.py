"""An untouched draft moves onto another writer's newer version as the kernel
looks up its folder, through a real mount.  That LOOKUP holds the collection
folder's lock in the kernel until the daemon replies, so dropping the alias
dentries there must not wait for the kernel (it deadlocked the folder: a
newcomer's `head > draft/x.bin` and every later `ls` hung for good)."""
from __future__ import annotations

import os
import subprocess

from draft_helpers import publish
from mountutil import abort_connection, mount_factory, wait_for  # noqa: F401  (fixture)
from test_draft_mount import BASE, store  # noqa: F401  (fixture)

from artifactfs.registry.versions import Registry

HUNG = 30.0  # seconds: far more than a listing takes even on a loaded machine


def listing(path: str) -> list[str]:
    """`ls path` in a child process; a hang aborts the mount's connection and fails."""
    child = subprocess.Popen(["ls", "-1", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=HUNG)
    except subprocess.TimeoutExpired:
        abort_connection(os.path.dirname(os.path.dirname(path)))
        child.communicate()
        raise AssertionError(f"ls {path} hung for {HUNG:g} s: the mount deadlocked") from None
    assert child.returncode == 0, err
    return out.split()


def test_an_untouched_draft_follows_another_writers_version_without_hanging(store, mount_factory, tmp_path):
    m = mount_factory(store, "--refresh", "0.1")
    d = m.p("ds", "draft")
    assert "top" in listing(d)
    assert os.readlink(m.p("ds", "ds:latest")) == "ds:v0"  # the kernel holds the alias dentries
    publish(Registry.open(store), str(tmp_path / "other"), "ds", {"theirs": b"another machine"})
    # The kernel forgets the dentry draft/ (its next lookup holds ds/'s lock), then
    # looks up the alias again (the daemon has it to drop when the draft moves).
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    os.readlink(m.p("ds", "ds:latest"))
    wait_for(lambda: "theirs" in listing(d), 60, "the draft to show ds:v1")
    assert os.readlink(m.p("ds", "ds:latest")) == "ds:v1"
    with open(os.path.join(d, "x.bin"), "wb") as f:  # what hung: a create in the draft after the move
        f.write(b"x" * 1000)
    assert {"theirs", "x.bin", "top"} <= set(listing(d))

