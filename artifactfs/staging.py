"""The on-disk draft of one collection: a real directory tree in the private state dir.

A draft lives in drafts/<store key>/<project>/<slot>/<collection>/ below the state
dir (draftstate.py): draft.json (base, type, attributes, clean-file stamps) and tree/.

tree/ is copy-on-write from the base version, overlay-style, with stand-ins whose
names contain a backslash (impossible in an artifact, so never a user's name):
- a folder holding a marker file LAZY ('\\lazy') is *lazy*: its content is the base
  sub-tree named in the marker, overlaid with what is on disk in it: an entry on
  disk hides the base entry of that name, and a whiteout file (WHITEOUT + a hash of
  the name) hides a deleted one.  A fresh draft is a lazy root and nothing else;
- a regular file with the sticky bit is a *placeholder*: its content is the JSON
  FileEntry of a base file, its permission bits the visible mode; reads go to the
  base, and the first write replaces it by the real bytes (copy-up: a temporary
  file renamed over it);
- a base entry is put on disk (as a placeholder, or a lazy folder) only when it is
  itself changed or is a folder on the path of a change: a change costs O(depth),
  never O(size of a folder), and a commit reads only what is on disk.
Each user operation is one syscall or one atomic rename on this tree (a whiteout is
written first where one is needed, so a crash in between leaves the old state
visible): a daemon killed at any moment loses nothing the kernel already has.
Callers serialize changes against a commit; nothing here is thread-safe on its own."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass

from .draftstate import STATE_FILE, TMP, DraftState, write_atomic
from .manifest import DirEntry, Entry, FileEntry, TreeIO
from .standins import (LAZY, PLACEHOLDER_BIT, WHITEOUT, Fetch, check_new_name, is_internal, is_placeholder,
                       join, lazy_of, mode_of, read_placeholder, split, summary, whiteout_name, write_lazy)

@dataclass(frozen=True)
class Node:
    """What a path of the draft is.  disk is None for a base entry not on disk
    (virtual); entry is the base file of a placeholder or virtual file; lazy the
    base sub-tree of a lazy or virtual folder."""

    path: str
    is_dir: bool
    mode: int
    size: int
    mtime_ns: int
    disk: str | None = None
    entry: FileEntry | None = None
    lazy: DirEntry | None = None


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
            from .draftadvance import advance  # a killed advance is finished first
            adv = self.state.advancing
            advance(self, adv["version"], adv["root"], adv["mtime_ns"], adv["clean"])

    @classmethod
    def new(cls, path: str, io: TreeIO, fetch: Fetch, state: DraftState, root: DirEntry | None = None) -> "Draft":
        """A new draft equal to state.base (empty when there is none); `root`, the
        base's root entry when known, spares loading its tree."""
        os.makedirs(path, mode=0o700, exist_ok=True)
        tree = os.path.join(path, "tree")
        shutil.rmtree(tree, ignore_errors=True)
        os.mkdir(tree, 0o755)
        if state.base_root:
            write_lazy(tree, root or DirEntry(state.base_root, *summary(io.load(state.base_root))))
        write_atomic(os.path.join(path, STATE_FILE), state.to_json())
        return cls(path, io, fetch)

    @classmethod
    def open_or_create(cls, path: str, io: TreeIO, fetch: Fetch, state: DraftState,
                       root: DirEntry | None = None) -> "Draft":
        if os.path.exists(os.path.join(path, STATE_FILE)):
            return cls(path, io, fetch)
        return cls.new(path, io, fetch, state, root)

    def save_state(self) -> None:
        write_atomic(os.path.join(self.dir, STATE_FILE), self.state.to_json())

    def discard(self) -> None:
        """Remove the draft from disk (a new collection given up before its first commit)."""
        shutil.rmtree(self.dir)

    # -- reading -------------------------------------------------------------
    def disk(self, path: str) -> str:
        return os.path.join(self.tree, *split(path))

    def base_entry(self, disk_dir: str, name: str) -> Entry | None:
        """The base entry `name` that shows through the folder disk_dir (lazy, not
        whited out), whether or not something on disk hides it."""
        base = lazy_of(disk_dir)
        if base is None or os.path.lexists(os.path.join(disk_dir, whiteout_name(name))):
            return None
        return self.io.load(base.tree).get(name)

    def stat(self, path: str) -> Node | None:
        """The node at `path`, or None if there is none."""
        disk: str | None = self.tree
        st: os.stat_result | None = os.lstat(self.tree)
        entry: Entry | None = None
        walked = ""
        for name in split(path):
            if is_internal(name):
                return None
            walked = join(walked, name)
            if disk is not None:
                assert st is not None
                if not stat.S_ISDIR(st.st_mode):
                    return None
                child = os.path.join(disk, name)
                try:
                    st = os.lstat(child)
                    disk = child
                    continue
                except FileNotFoundError:
                    entry = self.base_entry(disk, name)
                    disk, st = None, None
            elif isinstance(entry, DirEntry):
                entry = self.io.load(entry.tree).get(name)
            else:
                return None
            if entry is None:
                return None
        if disk is not None:
            assert st is not None
            return self._from_disk(walked, disk, st)
        assert entry is not None
        return self._node_of_entry(walked, entry)

    def _node_of_entry(self, path: str, entry: Entry) -> Node:
        t = self.state.base_mtime_ns
        if isinstance(entry, DirEntry):
            return Node(path, True, 0o755, 0, t, lazy=entry)
        return Node(path, False, mode_of(entry), entry.size, t, entry=entry)

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
        node = self.stat(path)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        if not node.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        if node.disk is None:
            assert node.lazy is not None
            tree = self.io.load(node.lazy.tree)
            return [self._node_of_entry(join(path, n), tree[n]) for n in sorted(tree)]
        names = os.listdir(node.disk)
        out: dict[str, Node] = {}
        for name in names:
            if not is_internal(name):
                disk = os.path.join(node.disk, name)
                try:
                    child = self._from_disk(join(path, name), disk, os.lstat(disk))
                except FileNotFoundError:
                    continue
                if child is not None:
                    out[name] = child
        if node.lazy is not None:
            hidden = {n for n in names if n.startswith(WHITEOUT)}
            for name, entry in self.io.load(node.lazy.tree).items():
                if name not in out and not (hidden and whiteout_name(name) in hidden):
                    out[name] = self._node_of_entry(join(path, name), entry)
        return [out[n] for n in sorted(out)]

    def _visible_names(self, disk_dir: str) -> list[str]:
        """What a folder on disk shows (its overlay and the base entries not hidden)."""
        names = os.listdir(disk_dir)
        shown = {n for n in names if not is_internal(n)}
        base = lazy_of(disk_dir)
        if base is not None:
            hidden = {n for n in names if n.startswith(WHITEOUT)}
            shown |= {n for n in self.io.load(base.tree) if whiteout_name(n) not in hidden}
        return sorted(shown)

    # -- putting base entries on disk ------------------------------------------------
    def folder(self, path: str) -> str:
        """The folder at `path` as a directory on disk, base folders on the way put
        on disk as lazy stand-ins (O(depth))."""
        disk = self.tree
        for name in split(path):
            disk = self.bring(disk, name, path)
            if not stat.S_ISDIR(os.lstat(disk).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        return disk

    def bring(self, disk_dir: str, name: str, path: str) -> str:
        """`name` in the on-disk folder disk_dir, put on disk if it is only in the base."""
        if is_internal(name):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        target = os.path.join(disk_dir, name)
        if not os.path.lexists(target):
            entry = self.base_entry(disk_dir, name)
            if entry is None:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
            self.put_stand_in(disk_dir, name, entry)
        return target

    def put_stand_in(self, disk_dir: str, name: str, entry: Entry) -> None:
        """Put (or replace, atomically) the stand-in of a base entry at disk_dir/name."""
        tmp = os.path.join(disk_dir, f"{TMP}{uuid.uuid4().hex}")
        t = self.state.base_mtime_ns
        try:
            if isinstance(entry, DirEntry):
                os.mkdir(tmp)
                os.chmod(tmp, 0o755)  # what a base folder shows, whatever our umask
                write_lazy(tmp, entry)
            else:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, json.dumps(entry.to_json(), sort_keys=True).encode())
                    os.fchmod(fd, PLACEHOLDER_BIT | mode_of(entry))
                finally:
                    os.close(fd)
            os.utime(tmp, ns=(t, t))
            os.rename(tmp, os.path.join(disk_dir, name))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True) if os.path.isdir(tmp) else _unlink_quiet(tmp)
            raise

    def copy_up(self, path: str, keep_data: bool = True) -> str:
        """Make the file at `path` real (fetching the base bytes unless keep_data is
        False, for O_TRUNC); returns its disk path.  On any error (ENOSPC ...) the
        placeholder is left as it was."""
        parent, name = _parent(path)
        disk = self.bring(self.folder(parent), name, path)
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

    # -- changes (each one syscall or one rename on the tree) ------------------------
    def _exists(self, disk_dir: str, name: str) -> bool:
        return os.path.lexists(os.path.join(disk_dir, name)) or self.base_entry(disk_dir, name) is not None

    def _hide(self, disk_dir: str, name: str) -> None:
        """Whiteout the base entry `name` if one shows through (before removing it from disk)."""
        if self.base_entry(disk_dir, name) is not None:
            os.close(os.open(os.path.join(disk_dir, whiteout_name(name)), os.O_WRONLY | os.O_CREAT, 0o600))

    def create(self, path: str, mode: int) -> int:
        """A new empty real file, open for reading and writing whatever its mode (as
        creat(2) grants); FileExistsError if the name is taken."""
        parent, name = _parent(path)
        check_new_name(name)
        d = self.folder(parent)
        if self.base_entry(d, name) is not None:
            raise FileExistsError(errno.EEXIST, "file exists", path)
        fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, mode & 0o777)  # exactly the mode asked for, not reduced by our umask
        return fd

    def mkdir(self, path: str, mode: int) -> str:
        parent, name = _parent(path)
        check_new_name(name)
        d = self.folder(parent)
        if self.base_entry(d, name) is not None:
            raise FileExistsError(errno.EEXIST, "file exists", path)
        disk = os.path.join(d, name)
        os.mkdir(disk, mode & 0o777)
        os.chmod(disk, mode & 0o777)
        return disk

    def unlink(self, path: str) -> None:
        parent, name = _parent(path)
        d = self.folder(parent)
        disk = os.path.join(d, _user_name(name, path))
        base = self.base_entry(d, name)
        try:
            st: os.stat_result | None = os.lstat(disk)
        except FileNotFoundError:
            st = None
        if st is None and base is None:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        if (stat.S_ISDIR(st.st_mode) if st is not None else isinstance(base, DirEntry)):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        self._hide(d, name)
        if st is not None:
            os.unlink(disk)

    def rmdir(self, path: str) -> None:
        parent, name = _parent(path)
        d = self.folder(parent)
        disk = os.path.join(d, _user_name(name, path))
        if not os.path.lexists(disk):
            base = self.base_entry(d, name)
            if base is None:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
            if isinstance(base, FileEntry):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            raise OSError(errno.ENOTEMPTY, "directory not empty", path)  # base folders never are
        if not stat.S_ISDIR(os.lstat(disk).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        if self._visible_names(disk):
            raise OSError(errno.ENOTEMPTY, "directory not empty", path)
        self._hide(d, name)
        _clear_internal(disk)
        os.rmdir(disk)

    def rename(self, old: str, new: str, noreplace: bool = False) -> None:
        """rename(2) on the draft; a lazy folder moves as it is (a graft at commit)."""
        op, on = _parent(old)
        np, nn = _parent(new)
        check_new_name(nn)
        sd = self.folder(op)
        dd = self.folder(np)  # both parents first, as rename(2) resolves them
        src = self.bring(sd, on, old)
        dst = os.path.join(dd, nn)
        if src == dst:
            return
        if self._exists(dd, nn):
            if noreplace:
                raise FileExistsError(errno.EEXIST, "file exists", new)
            self.bring(dd, nn, new)  # on disk, so rename(2) itself judges (EISDIR, ENOTEMPTY ...)
            if (stat.S_ISDIR(os.lstat(dst).st_mode) and stat.S_ISDIR(os.lstat(src).st_mode)
                    and not self._visible_names(dst)):
                _clear_internal(dst)  # an empty-looking folder may be replaced
        self._hide(sd, on)
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
        return self.bring(self.folder(parent), name, path)

    # -- attributes for the next commit ---------------------------------------
    def set_attr(self, key: str, value: object) -> None:
        """description, metadata, aliases, tags (None removes); persisted at once."""
        if value is None:
            self.state.attrs.pop(key, None)
        else:
            self.state.attrs[key] = value
        self.save_state()

    def set_type(self, type_: str) -> None:
        self.state.type = type_
        self.save_state()

    def is_clean(self) -> bool:
        """Nothing to commit: the root is still the lazy base root, nothing on disk
        over it, and no attributes wait."""
        if self.state.attrs:
            return False
        lazy = lazy_of(self.tree)
        extra = [n for n in os.listdir(self.tree) if n != LAZY and not n.startswith(TMP)]
        if self.state.base_root is None:
            return lazy is None and not extra
        return lazy is not None and lazy.tree == self.state.base_root and not extra

    def recover(self) -> None:
        """Remove temporaries a killed process left behind."""
        for dirpath, dirnames, filenames in os.walk(self.tree):
            for n in filenames + dirnames:
                if n.startswith(TMP):
                    full = os.path.join(dirpath, n)
                    shutil.rmtree(full) if os.path.isdir(full) else _unlink_quiet(full)
            dirnames[:] = [d for d in dirnames if not is_internal(d)]


def _clear_internal(disk_dir: str) -> None:
    """Remove the marker, whiteouts and temporaries of a folder about to go."""
    for n in os.listdir(disk_dir):
        if is_internal(n):
            full = os.path.join(disk_dir, n)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else _unlink_quiet(full)


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
