"""The on-disk draft of one collection: a real directory tree in the private state dir.

A draft lives in drafts/<store key>/<project>/<slot>/<collection>/ below the state dir:
  draft.json   base version, type, attributes for the next commit, clean-file stamps
               (replaced atomically: written to a temporary name, then renamed)
  tree/        the draft's files and folders

It is copy-on-write from the base version, with two stand-ins recognised on disk:
- a lazy folder is a directory holding a file LAZY ('\\lazy', a name no artifact can
  contain) with the JSON DirEntry of the base sub-tree it equals; its listing comes
  from that tree, and it is materialized (children created as stand-ins, then the
  marker removed) the first time something below it changes;
- a placeholder is a regular file with the sticky bit set whose content is the JSON
  FileEntry of the base file it equals; its permission bits are the visible mode.
  It is replaced by the real bytes (copy-up, an atomic rename) when first modified.
Every user operation is one syscall or one atomic rename on this tree, so a daemon
killed at any moment loses nothing the kernel already has, and rename, unlink,
mkdir, chmod and truncate are just the same syscalls.  Callers serialize mutations
against a commit (draftcommit.py); nothing here is thread-safe on its own."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .draftstate import STATE_FILE, TMP, DraftState, state_dir, write_atomic  # noqa: F401  (state_dir: for the mount)
from .errors import InvalidNameError
from .manifest import DirEntry, FileEntry, TreeIO
from .names import check_component

LAZY = "\\lazy"
PLACEHOLDER_BIT = stat.S_ISVTX

Fetch = Callable[[FileEntry, int], None]
"""Writes the whole content of a base file into an open file descriptor."""


def is_internal(name: str) -> bool:
    """Names with a backslash are ours (markers, temporaries): never an artifact name."""
    return "\\" in name


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def lazy_of(disk_dir: str) -> DirEntry | None:
    """The base sub-tree a lazy folder equals, or None when it is materialized."""
    d = _read_json(os.path.join(disk_dir, LAZY))
    return None if d is None else DirEntry(d["tree"], int(d["size"]), int(d["files"]))


def is_placeholder(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & PLACEHOLDER_BIT)


_KNOWN: dict[tuple[int, int, int], FileEntry] = {}
_KNOWN_MAX = 1_000_000


def read_placeholder(disk: str, st: os.stat_result) -> FileEntry:
    """The base file a placeholder stands for, its executable bit taken from the mode.
    A placeholder's content never changes in place (it is replaced, a new inode), so
    entries are remembered by (device, inode, ctime)."""
    key = (st.st_dev, st.st_ino, st.st_ctime_ns)
    e = _KNOWN.get(key)
    if e is None:
        d = _read_json(disk)
        if d is None:
            raise FileNotFoundError(errno.ENOENT, "placeholder vanished", disk)
        e = FileEntry.from_json(d)
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[key] = e
    return FileEntry(e.digest, e.size, e.chunks, bool(st.st_mode & 0o111), e.ref, e.extra)


def check_new_name(name: str) -> str:
    """A name a new file or folder may have: valid in an artifact, and UTF-8."""
    check_component(name)
    try:
        name.encode()
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid name {name!r}: not UTF-8") from None
    return name


def _mode_of(entry: FileEntry) -> int:
    return 0o755 if entry.executable else 0o644


@dataclass(frozen=True)
class Node:
    """What a path of the draft is.  disk is None for a path inside a lazy folder;
    entry is the base file (placeholder or virtual file); lazy the base sub-tree
    of a lazy or virtual folder."""

    path: str
    is_dir: bool
    mode: int
    size: int
    mtime_ns: int
    disk: str | None = None
    entry: FileEntry | None = None
    lazy: DirEntry | None = None

    @property
    def is_real_file(self) -> bool:
        return not self.is_dir and self.entry is None


class Draft:
    """One collection's draft on disk.  Paths are '/'-separated and relative to the
    draft root ('' is the root)."""

    def __init__(self, path: str, io: TreeIO, fetch: Fetch):
        self.dir = path
        self.tree = os.path.join(path, "tree")
        self.io = io
        self.fetch = fetch
        with open(os.path.join(path, STATE_FILE), "rb") as f:
            self.state = DraftState.from_json(f.read())
        if self.state.advancing:
            adv = self.state.advancing
            self.advance(adv["version"], adv["root"], adv["mtime_ns"], adv["clean"])

    @classmethod
    def new(cls, path: str, io: TreeIO, fetch: Fetch, state: DraftState) -> "Draft":
        """A new draft equal to state.base (empty when there is none)."""
        os.makedirs(path, mode=0o700, exist_ok=True)
        tree = os.path.join(path, "tree")
        shutil.rmtree(tree, ignore_errors=True)
        os.mkdir(tree, 0o755)
        if state.base_root:
            _write_lazy(tree, DirEntry(state.base_root, *_summary(io.load(state.base_root))))
        write_atomic(os.path.join(path, STATE_FILE), state.to_json())
        return cls(path, io, fetch)

    @classmethod
    def open_or_create(cls, path: str, io: TreeIO, fetch: Fetch, state: DraftState) -> "Draft":
        if os.path.exists(os.path.join(path, STATE_FILE)):
            return cls(path, io, fetch)
        return cls.new(path, io, fetch, state)

    def save_state(self) -> None:
        write_atomic(os.path.join(self.dir, STATE_FILE), self.state.to_json())

    def discard(self) -> None:
        """Remove the draft from disk (a new collection given up before its first commit)."""
        shutil.rmtree(self.dir)

    # -- reading -------------------------------------------------------------
    def disk(self, path: str) -> str:
        return os.path.join(self.tree, *split(path))

    def stat(self, path: str) -> Node | None:
        """The node at `path`, or None if there is none."""
        parts = split(path)
        disk = self.tree
        for i, name in enumerate(parts):
            lazy = lazy_of(disk)
            if lazy is not None:
                return self._virtual(lazy, parts[i:], "/".join(parts[:i]))
            if is_internal(name):
                return None
            disk = os.path.join(disk, name)
        try:
            st = os.lstat(disk)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._from_disk("/".join(parts), disk, st)

    def _virtual(self, lazy: DirEntry, rest: list[str], prefix: str) -> Node | None:
        entry: DirEntry | FileEntry = lazy
        for name in rest:
            if not isinstance(entry, DirEntry):
                return None
            child = self.io.load(entry.tree).get(name)
            if child is None:
                return None
            entry, prefix = child, join(prefix, name)
        return self._node_of_entry(prefix, entry)

    def _node_of_entry(self, path: str, entry: DirEntry | FileEntry, disk: str | None = None) -> Node:
        t = self.state.base_mtime_ns
        if isinstance(entry, DirEntry):
            return Node(path, True, 0o755, 0, t, disk=disk, lazy=entry)
        return Node(path, False, _mode_of(entry), entry.size, t, disk=disk, entry=entry)

    def _from_disk(self, path: str, disk: str, st: os.stat_result) -> Node | None:
        mode = stat.S_IMODE(st.st_mode) & 0o777
        if stat.S_ISDIR(st.st_mode):
            return Node(path, True, mode, 0, st.st_mtime_ns, disk=disk, lazy=lazy_of(disk))
        if not stat.S_ISREG(st.st_mode):
            return None
        if is_placeholder(st):
            entry = read_placeholder(disk, st)
            return Node(path, False, mode, entry.size, st.st_mtime_ns, disk=disk, entry=entry)
        return Node(path, False, mode, st.st_size, st.st_mtime_ns, disk=disk)

    def listdir(self, path: str) -> list[Node]:
        """The children of a folder, in name order (NotADirectoryError, FileNotFoundError)."""
        node = self._existing(path)
        if not node.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        if node.lazy is not None:
            tree = self.io.load(node.lazy.tree)
            return [self._node_of_entry(join(path, n), tree[n]) for n in sorted(tree)]
        out = []
        for name in sorted(os.listdir(node.disk)):
            if is_internal(name):
                continue
            disk = os.path.join(node.disk, name)
            try:
                child = self._from_disk(join(path, name), disk, os.lstat(disk))
            except FileNotFoundError:
                continue
            if child is not None:
                out.append(child)
        return out

    def _existing(self, path: str) -> Node:
        node = self.stat(path)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        return node

    # -- copy on write -------------------------------------------------------
    def materialize(self, path: str) -> str:
        """Make the folder at `path` and its ancestors real; returns its disk path."""
        disk = self.tree
        self._materialize_one(disk)
        for name in split(path):
            if is_internal(name):
                raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
            disk = os.path.join(disk, name)
            st = os.lstat(disk)  # FileNotFoundError passes through
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            self._materialize_one(disk)
        return disk

    def _materialize_one(self, disk: str) -> None:
        lazy = lazy_of(disk)
        if lazy is None:
            return
        for name, entry in self.io.load(lazy.tree).items():
            # written in place: nobody sees this folder's entries before the marker goes
            self._put_stand_in(disk, name, entry, atomic=False)
        os.unlink(os.path.join(disk, LAZY))  # the commit point: now it is materialized

    def _put_stand_in(self, disk_dir: str, name: str, entry: DirEntry | FileEntry, atomic: bool = True) -> None:
        """Create (or re-create, idempotently) the stand-in for a base entry."""
        target = os.path.join(disk_dir, name)
        if isinstance(entry, DirEntry):
            try:
                os.mkdir(target, 0o755)
            except FileExistsError:
                pass
            _write_lazy(target, entry)
            return
        path = os.path.join(disk_dir, f"{TMP}{uuid.uuid4().hex}") if atomic else target
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps(entry.to_json(), sort_keys=True).encode())
            os.fchmod(fd, PLACEHOLDER_BIT | _mode_of(entry))
            t = self.state.base_mtime_ns
            os.utime(fd, ns=(t, t))
        finally:
            os.close(fd)
        if atomic:
            os.replace(path, target)

    def copy_up(self, path: str, keep_data: bool = True) -> str:
        """Make the file at `path` real (fetching the base bytes unless keep_data is
        False, for O_TRUNC); returns its disk path.  On any error (ENOSPC ...) the
        placeholder is left as it was."""
        parent, name = _parent(path)
        disk = os.path.join(self.materialize(parent), name)
        st = os.lstat(disk)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if not is_placeholder(st):
            return disk
        entry = read_placeholder(disk, st)
        tmp = os.path.join(os.path.dirname(disk), f"{TMP}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, stat.S_IMODE(st.st_mode) & 0o777)
        try:
            try:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o777)
                if keep_data:
                    self.fetch(entry, fd)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))  # a later write moves mtime
            finally:
                os.close(fd)
            os.replace(tmp, disk)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return disk

    # -- mutations (each one syscall or one rename on the tree) ---------------
    def create(self, path: str, mode: int) -> int:
        """A new empty real file, open for reading and writing whatever its mode (as
        creat(2) grants); FileExistsError if the name is taken."""
        parent, name = _parent(path)
        check_new_name(name)
        disk = os.path.join(self.materialize(parent), name)
        fd = os.open(disk, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, mode & 0o777)  # exactly the mode asked for, not reduced by our umask
        return fd

    def mkdir(self, path: str, mode: int) -> str:
        parent, name = _parent(path)
        check_new_name(name)
        disk = os.path.join(self.materialize(parent), name)
        os.mkdir(disk, mode & 0o777)
        os.chmod(disk, mode & 0o777)
        return disk

    def unlink(self, path: str) -> None:
        parent, name = _parent(path)
        disk = os.path.join(self.materialize(parent), _user_name(name, path))
        if stat.S_ISDIR(os.lstat(disk).st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        os.unlink(disk)

    def rmdir(self, path: str) -> None:
        parent, name = _parent(path)
        disk = os.path.join(self.materialize(parent), _user_name(name, path))
        if os.path.isdir(disk) and not os.path.exists(os.path.join(disk, LAZY)):
            for leftover in [n for n in os.listdir(disk) if n.startswith(TMP)]:
                _unlink_quiet(os.path.join(disk, leftover))
        os.rmdir(disk)

    def rename(self, old: str, new: str, noreplace: bool = False) -> None:
        """rename(2) on the draft; a lazy folder moves as it is (a graft at commit)."""
        op, on = _parent(old)
        np, nn = _parent(new)
        check_new_name(nn)
        src = os.path.join(self.materialize(op), _user_name(on, old))
        dst = os.path.join(self.materialize(np), nn)
        os.lstat(src)
        if noreplace and os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "file exists", new)
        os.rename(src, dst)

    def chmod(self, path: str, mode: int) -> None:
        """Permission bits only; a placeholder keeps its marker bit."""
        disk = self._disk_for_change(path)
        st = os.lstat(disk)
        os.chmod(disk, (mode & 0o777) | (st.st_mode & PLACEHOLDER_BIT if stat.S_ISREG(st.st_mode) else 0))

    def truncate(self, path: str, size: int) -> None:
        disk = self.copy_up(path, keep_data=size > 0)
        os.truncate(disk, size)

    def utime(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        disk = self._disk_for_change(path)
        st = os.lstat(disk)
        os.utime(disk, ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                           st.st_mtime_ns if mtime_ns is None else mtime_ns), follow_symlinks=False)

    def _disk_for_change(self, path: str) -> str:
        if not split(path):
            return self.tree
        parent, name = _parent(path)
        disk = os.path.join(self.materialize(parent), _user_name(name, path))
        os.lstat(disk)
        return disk

    # -- attributes for the next commit ---------------------------------------
    def set_attr(self, key: str, value) -> None:
        """description, metadata, aliases, tags (None removes); persisted at once."""
        if value is None:
            self.state.attrs.pop(key, None)
        else:
            self.state.attrs[key] = value
        self.save_state()

    def set_type(self, type_: str) -> None:
        self.state.type = type_
        self.save_state()

    # -- moving to a new base ---------------------------------------------------
    def is_clean(self) -> bool:
        """Nothing to commit: the root is still the lazy base root and no attributes wait."""
        lazy = lazy_of(self.tree)
        return (not self.state.attrs and (
            (lazy is not None and lazy.tree == self.state.base_root)
            or (self.state.base_root is None and not [n for n in os.listdir(self.tree) if not is_internal(n)])))

    def advance(self, version: int, root: str, mtime_ns: int, clean: dict) -> list[str]:
        """Make `version` (whose tree is `root`) the base.  Stand-ins still equal to the
        old base are moved to the new one; everything else is the user's and stays.
        Journaled in draft.json, so a crash midway is finished by the next load.
        Returns the paths whose content changed on disk."""
        self.state.advancing = {"version": version, "root": root, "mtime_ns": mtime_ns, "clean": clean}
        self.save_state()
        changed: list[str] = []
        self._merge(self.tree, "", self.state.base_root, root, changed)
        self.state.base, self.state.base_root, self.state.base_mtime_ns = version, root, mtime_ns
        self.state.attrs, self.state.clean, self.state.advancing = {}, clean, None
        self.save_state()
        return changed

    def _merge(self, disk: str, path: str, old: str | None, new: str | None, changed: list[str]) -> None:
        lazy = lazy_of(disk)
        if lazy is not None:
            if lazy.tree == old and new is not None:
                _write_lazy(disk, DirEntry(new, *_summary(self.io.load(new))))
                changed.append(path)
            return
        a = self.io.load(old) if old else {}
        b = self.io.load(new) if new else {}
        for name in sorted(set(a) | set(b)):
            o, n = a.get(name), b.get(name)
            if o == n:
                continue
            target, p = os.path.join(disk, name), join(path, name)
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                st = None
            if st is None:
                if n is not None:  # added there, or a crash in a previous advance
                    self._put_stand_in(disk, name, n)
                    changed.append(p)
            elif stat.S_ISDIR(st.st_mode):
                sub = lazy_of(target)
                if sub is not None:
                    if isinstance(o, DirEntry) and sub.tree == o.tree:  # an untouched base folder
                        if isinstance(n, DirEntry):
                            _write_lazy(target, n)
                        else:
                            shutil.rmtree(target)
                            if n is not None:
                                self._put_stand_in(disk, name, n)
                        changed.append(p)
                    continue  # otherwise a folder the user moved here
                self._merge(target, p, o.tree if isinstance(o, DirEntry) else None,
                            n.tree if isinstance(n, DirEntry) else None, changed)
                if isinstance(n, FileEntry) and not [x for x in os.listdir(target) if not is_internal(x)]:
                    shutil.rmtree(target)  # their file replaces a folder we left empty
                    self._put_stand_in(disk, name, n)
                changed.append(p)
            elif is_placeholder(st) and read_placeholder(target, st) == o:
                if not isinstance(n, FileEntry):
                    os.unlink(target)
                if n is not None:
                    self._put_stand_in(disk, name, n)
                changed.append(p)

    def recover(self) -> None:
        """Remove temporaries a killed process left in materialized folders."""
        for dirpath, dirnames, filenames in os.walk(self.tree):
            if LAZY in filenames:
                dirnames[:] = []
                continue
            for n in filenames + dirnames:
                if n.startswith(TMP):
                    full = os.path.join(dirpath, n)
                    shutil.rmtree(full) if os.path.isdir(full) else _unlink_quiet(full)
            dirnames[:] = [d for d in dirnames if not is_internal(d)]


def _summary(tree: dict) -> tuple[int, int]:
    size = files = 0
    for e in tree.values():
        size += e.size
        files += e.files if isinstance(e, DirEntry) else 1
    return size, files


def _write_lazy(disk_dir: str, entry: DirEntry) -> None:
    write_atomic(os.path.join(disk_dir, LAZY), json.dumps(entry.to_json()).encode(), fsync=False)


def _parent(path: str) -> tuple[str, str]:
    parts = split(path)
    if not parts:
        raise PermissionError(errno.EPERM, "operation not permitted on the draft root", path)
    return "/".join(parts[:-1]), parts[-1]


def _user_name(name: str, path: str) -> str:
    if is_internal(name):
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
    return name


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
