"""Property: any sequence of file operations applied to a draft (through the
staging API, as the mount does) and to a plain folder gives, after each commit,
a version equal to the folder byte for byte and executable bit for executable bit;
and every operation fails on the draft exactly when (and with the errno) it fails
on the folder."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile

from draft_helpers import Paths, dir_files, errno_of, open_test_draft, publish, version_files, write_files
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from artifactfs.drafts import filedata
from artifactfs.drafts.commit import commit_draft
from artifactfs.drafts.frommemory import surely_absent
from artifactfs.registry.versions import Registry

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
DATA = st.binary(max_size=64) | st.sampled_from([b"x" * 5000, bytes(300)])
BASE = {"a/a": b"base a/a", "a/b/c": (b"exec", True), "b": b"b" * 100, "c/c/c": b"deep"}


class DraftMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="draft-stateful-")
        os.environ["XDG_STATE_HOME"] = os.path.join(self.tmp, "state")
        self.reg = Registry.open(os.path.join(self.tmp, "store"), create=True)
        publish(self.reg, os.path.join(self.tmp, "pub"), "ds", BASE)
        self.plain = os.path.join(self.tmp, "plain")
        write_files(self.plain, BASE)
        self.theirs: dict[str, bytes] = {}
        self.draft = Paths(open_test_draft(self.reg))

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.environ.pop("XDG_STATE_HOME", None)

    def same(self, on_plain, on_draft) -> None:
        want = errno_of(on_plain)
        got = errno_of(on_draft)
        assert got == want, (want, got)

    def p(self, path: str) -> str:
        return os.path.join(self.plain, path)

    def _draft_write(self, path: str, data: bytes, offset: int, trunc: bool) -> None:
        """open(O_WRONLY | O_CREAT [| O_TRUNC]) and pwrite, on the engine."""
        engine = self.draft.draft
        head, _, name = path.rpartition("/")
        d = self.draft._need(head)
        try:
            ino = engine.lookup(d, name)
        except FileNotFoundError:
            ino = engine.make(d, name, stat.S_IFREG | 0o644, os.getuid(), os.getgid())
        if ino.is_dir:
            raise IsADirectoryError(21, "is a directory")
        if trunc:
            filedata.truncate(engine, ino, 0)
        filedata.write(engine, ino, offset, data)

    @rule(path=PATHS, data=DATA, offset=st.sampled_from([0, 3, 7000]), trunc=st.booleans())
    def write(self, path, data, offset, trunc):
        def plain():
            fd = os.open(self.p(path), os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else 0), 0o644)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        self.same(plain, lambda: self._draft_write(path, data, offset, trunc))

    @rule(path=PATHS, size=st.sampled_from([0, 1, 50, 9000]))
    def truncate(self, path, size):
        self.same(lambda: os.truncate(self.p(path), size), lambda: self.draft.truncate(path, size))

    @rule(path=PATHS)
    def mkdir(self, path):
        self.same(lambda: os.mkdir(self.p(path), 0o755), lambda: self.draft.mkdir(path, 0o755))

    @rule(path=PATHS)
    def unlink(self, path):
        self.same(lambda: os.unlink(self.p(path)), lambda: self.draft.unlink(path))

    @rule(path=PATHS)
    def rmdir(self, path):
        self.same(lambda: os.rmdir(self.p(path)), lambda: self.draft.rmdir(path))

    @rule(old=PATHS, new=PATHS)
    def rename(self, old, new):
        self.same(lambda: os.rename(self.p(old), self.p(new)), lambda: self.draft.rename(old, new))

    @rule(old=PATHS, new=PATHS)
    def link(self, old, new):
        self.same(lambda: os.link(self.p(old), self.p(new)), lambda: self.draft.link(old, new))

    @rule(path=PATHS, exe=st.booleans())
    def chmod(self, path, exe):
        mode = 0o755 if exe else 0o644
        self.same(lambda: os.chmod(self.p(path), mode), lambda: self.draft.chmod(path, mode))

    @rule(data=st.binary(max_size=20), remove=st.booleans())
    def other_writer(self, data, remove):
        """Another writer commits meanwhile, in a folder the draft never touches:
        the next commit rebases onto it and the draft then shows it."""
        self.others = getattr(self, "others", 0) + 1
        path = f"zz/o{self.others % 3}"
        if remove and path in self.theirs:
            publish(self.reg, os.path.join(self.tmp, "pub"), "ds", {path: None})
            self.theirs.pop(path)
        else:
            publish(self.reg, os.path.join(self.tmp, "pub"), "ds", {path: data})
            self.theirs[path] = data

    @rule()
    def commit(self):
        r = commit_draft(self.reg, self.draft.draft)
        shutil.rmtree(os.path.join(self.plain, "zz"), ignore_errors=True)
        for path, data in self.theirs.items():  # what the other writer did is in the version now
            os.makedirs(os.path.join(self.plain, "zz"), exist_ok=True)
            with open(os.path.join(self.plain, path), "wb") as f:
                f.write(data)
        assert version_files(self.reg, "ds", r.version) == dir_files(self.plain)

    @invariant()
    def same_listing(self):
        if not hasattr(self, "draft"):
            return
        for dirpath, dirnames, filenames in os.walk(self.plain):
            rel = os.path.relpath(dirpath, self.plain)
            rel = "" if rel == "." else rel
            engine = self.draft.draft
            listed = {name: filedata.attributes(engine, ino) for name, ino in engine.readdir(self.draft._need(rel))}
            assert sorted(listed) == sorted(dirnames + filenames)
            for fn in filenames:
                st_ = os.lstat(os.path.join(dirpath, fn))
                got = listed[fn]
                assert (got.size, got.mode & 0o100, got.nlink) == (st_.st_size, st_.st_mode & 0o100, st_.st_nlink)
            for name in ("a", "b", "c", "new"):  # what the mount answers from memory, without a query
                if surely_absent(engine, self.draft._need(rel), name):
                    assert name not in listed

    @invariant()
    def names_kept_in_memory_are_the_rows(self):
        if not hasattr(self, "draft"):
            return
        db = self.draft.draft.db
        with db.lock:
            for parent, names in db._names.items():
                assert names == {name for name, _ in db.dentries(parent)}, parent


DraftMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_draft_operations_match_a_plain_folder = DraftMachine.TestCase
