"""Property, through a real mount: random sequences of file operations applied to
`draft/` and to a plain temporary folder fail alike (same errno) and, after each
sync, the committed version equals the folder byte for byte and mode for mode
(the executable bit; empty folders are not part of a version).  Open file
descriptors are held across renames, unlinks, hard links, copy-ups through
another name and syncs, and read and write the same file in both.  A sync while
a held descriptor's file (with a name) changed after it was opened publishes
nothing (the file is being written: docs/drafts.md); the model tracks which."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile

import pytest
from draft_helpers import dir_files, errno_of, publish, version_files, write_files
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from mountutil import mounted, wait_for

from artifactfs.drafts.syncclient import request
from artifactfs.registry.versions import Registry

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
DATA = st.binary(max_size=40) | st.sampled_from([b"x" * 70_000, bytes(300)])
BASE = {"a/a": b"base a/a", "a/b/c": (b"exec", True), "b": b"b" * 100, "c/c/c": b"deep"}
BATCH = 40
SLOTS = st.integers(0, 2)


class Collections:
    """A fresh collection per example, all with the same base version; published in
    batches (the mount sees new ones within a second)."""

    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.reg = Registry.open(str(tmp / "store"), create=True)
        self.made = 0
        self.used = 0
        self.publish()

    def publish(self) -> None:
        for i in range(self.made, self.made + BATCH):
            publish(self.reg, str(self.tmp / "pub"), f"c{i}", BASE)
        self.made += BATCH

    def next(self, m) -> str:
        if self.used == self.made:
            self.publish()
            wait_for(lambda: os.path.isdir(m.p(f"c{self.made - 1}")), 60, "new collections to appear")
        self.used += 1
        return f"c{self.used - 1}"


@pytest.fixture(scope="module")
def mount(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stateful")
    collections = Collections(tmp)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
    with mounted(str(tmp / "store"), tmp / "mnt", env=env) as m:
        yield m, collections


def _listing(root: str) -> dict[str, tuple[bool, int, bool]]:
    """path -> (is_dir, size, executable) for everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            s = os.lstat(full)
            isdir = stat.S_ISDIR(s.st_mode)
            out[os.path.relpath(full, root)] = (isdir, 0 if isdir else s.st_size, bool(s.st_mode & 0o100))
    return out


class MountedDraft(RuleBasedStateMachine):
    mount = None

    @initialize()
    def setup(self) -> None:
        self.m, collections = type(self).mount
        self.reg = collections.reg
        self.name = collections.next(self.m)
        self.draft = self.m.p(self.name, "draft")
        self.tmp = tempfile.mkdtemp(prefix="mount-stateful-")
        self.plain = os.path.join(self.tmp, "plain")
        write_files(self.plain, BASE)
        self.handles: dict[int, tuple[int, int]] = {}  # slot -> (plain fd, draft fd)
        self.busy: set[int] = set()  # slots whose file changed after they were opened: being written

    def _changed(self, plain_ino: int | None) -> None:
        """The file with this inode (in the plain folder) changed: held descriptors of it are being written."""
        for slot, (plain, _) in self.handles.items():
            if plain_ino is not None and os.fstat(plain).st_ino == plain_ino:
                self.busy.add(slot)

    def _file(self, path: str) -> int | None:
        """The plain folder's inode of a regular file at `path`, or None."""
        try:
            st_ = os.stat(os.path.join(self.plain, path))
        except OSError:
            return None
        return st_.st_ino if stat.S_ISREG(st_.st_mode) else None

    def teardown(self) -> None:
        for fds in getattr(self, "handles", {}).values():
            for fd in fds:
                os.close(fd)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- descriptors held across everything else -----------------------------------------
    @rule(slot=SLOTS, path=PATHS)
    def open_handle(self, slot, path):
        if slot in self.handles:
            return
        fds = []
        for root in (self.plain, self.draft):
            try:
                fds.append(os.open(os.path.join(root, path), os.O_RDWR))
            except OSError as e:
                fds.append(-e.errno)
        if min(fds) < 0:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            assert fds[0] == fds[1], (path, fds)
            return
        self.handles[slot] = (fds[0], fds[1])

    @rule(slot=SLOTS, data=DATA, offset=st.sampled_from([0, 3, 8000]))
    def handle_write(self, slot, data, offset):
        if slot in self.handles:
            for fd in self.handles[slot]:
                assert os.pwrite(fd, data, offset) == len(data)
            if data:
                self._changed(os.fstat(self.handles[slot][0]).st_ino)

    @rule(slot=SLOTS, size=st.sampled_from([0, 4, 20_000]))
    def handle_truncate(self, slot, size):
        if slot in self.handles:
            for fd in self.handles[slot]:
                os.ftruncate(fd, size)
            self._changed(os.fstat(self.handles[slot][0]).st_ino)

    @rule(slot=SLOTS)
    def handle_read(self, slot):
        if slot in self.handles:
            plain, draft = self.handles[slot]
            size = os.fstat(plain).st_size
            assert os.fstat(draft).st_size == size
            assert os.pread(draft, size + 10, 0) == os.pread(plain, size + 10, 0)
            assert os.fstat(draft).st_nlink == os.fstat(plain).st_nlink

    @rule(slot=SLOTS)
    def close_handle(self, slot):
        for fd in self.handles.pop(slot, ()):
            os.close(fd)
        self.busy.discard(slot)

    @rule(old=PATHS, new=PATHS)
    def link(self, old, new):
        self.both(os.link, old, new)

    def both(self, op, *paths: str) -> bool:
        """Do `op` in both folders: the same errno, or success (True)."""
        want = errno_of(lambda: op(*[os.path.join(self.plain, p) for p in paths]))
        got = errno_of(lambda: op(*[os.path.join(self.draft, p) for p in paths]))
        assert got == want, (op, paths, want, got)
        return want is None

    @rule(path=PATHS, data=DATA, offset=st.sampled_from([0, 5, 9000]), trunc=st.booleans())
    def write(self, path, data, offset, trunc):
        def op(full):
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else 0), 0o644)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        ino = self._file(path)
        if self.both(op, path) and (trunc or data):
            self._changed(ino)

    @rule(path=PATHS, data=st.binary(min_size=1, max_size=20))
    def append(self, path, data):
        def op(full):
            with open(full, "ab") as f:
                f.write(data)
        ino = self._file(path)
        if self.both(op, path):
            self._changed(ino)

    @rule(path=PATHS, size=st.sampled_from([0, 2, 50_000]))
    def truncate(self, path, size):
        ino = self._file(path)
        if self.both(lambda full: os.truncate(full, size), path):
            self._changed(ino)

    @rule(path=PATHS)
    def mkdir(self, path):
        self.both(os.mkdir, path)

    @rule(path=PATHS)
    def unlink(self, path):
        self.both(os.unlink, path)

    @rule(path=PATHS)
    def rmdir(self, path):
        self.both(os.rmdir, path)

    @rule(old=PATHS, new=PATHS)
    def rename(self, old, new):
        self.both(os.rename, old, new)

    @rule(path=PATHS, exe=st.booleans())
    def chmod(self, path, exe):
        self.both(lambda full: os.chmod(full, 0o755 if exe else 0o644), path)

    @rule()
    def sync(self):
        address = os.getxattr(self.m.path, "user.artifactfs.control").decode()
        reply = request(address, {"op": "sync", "collections": [self.name]})
        writing = [s for s in self.busy if os.fstat(self.handles[s][0]).st_nlink > 0]
        if writing:
            assert "still open for writing" in reply["results"][0].get("error", ""), (writing, reply)
            return
        line = reply["results"][0]["line"]
        version = int(line.split(":v")[1].split()[0])
        assert version_files(self.reg, self.name, version) == dir_files(self.plain)
        assert dir_files(self.draft) == dir_files(self.plain)

    @invariant()
    def same_tree(self):
        if hasattr(self, "plain"):
            assert _listing(self.draft) == _listing(self.plain)


MountedDraft.TestCase.settings = settings(max_examples=80, stateful_step_count=20, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])


def test_mount_operations_match_a_plain_folder(mount):
    MountedDraft.mount = mount
    MountedDraft.TestCase("runTest").runTest()
