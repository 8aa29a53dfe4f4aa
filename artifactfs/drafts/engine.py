"""The namespace of a draft: inodes and directory entries, copy-on-write from
the base version, everything resolved by identity (an Inode), never by path.

A folder overlays the base sub-tree it names (Inode.tree) with its own rows in
meta.db: a row with an inode hides the base entry of that name, a whiteout row
hides a deleted one.  A base entry nobody changed is a *virtual* inode (no row);
the first change that needs it on disk materializes it, and the folders above
it, so a change costs O(depth) rows whatever the size of the version.

Operations are POSIX's, with its errors (OSError with an errno): ENOENT,
EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL (a folder moved below itself),
ENAMETOOLONG (a name over 255 bytes), EPERM (a hard link to a folder).  Each is
one meta.db transaction, committed before it returns; on any error nothing has
changed, in memory or on disk.  Safe to call from several threads."""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from weakref import WeakValueDictionary

import xxhash

from ..registry.manifest import DirEntry, Entry, FileEntry, SymlinkEntry, TreeIO
from .datafiles import remove_data
from .inode import DraftState, Inode
from .meta import DB_FILE, MetaDB
from .posixnames import NAME_MAX, check_name, check_rename, posix_error

ROOT = 1
_NOT_RESTORED = ("lock", "running", "sealed")  # what a failed change leaves: kept under the inode's lock
STATE_KEY = "draft"
Fetch = Callable[[FileEntry, int], None]
"""Writes the whole content of a base file into an open file descriptor."""


def mode_of(entry: FileEntry) -> int:
    return stat.S_IFREG | (0o755 if entry.executable else 0o644)


class Draft:
    """One collection's draft: meta.db and data/ below `path`.  `owner` (uid,
    gid) owns what comes from the base; `fetch` copies a base file's bytes."""

    def __init__(self, path: str, io: TreeIO, fetch: Fetch, owner: tuple[int, int]):
        self.dir = path
        self.io = io
        self.fetch = fetch
        self.owner = owner
        self.data = os.path.join(path, "data")
        self.db = MetaDB(os.path.join(path, DB_FILE))
        self._by_id: WeakValueDictionary[int, Inode] = WeakValueDictionary()
        self._virtual: WeakValueDictionary[tuple[int, str], Inode] = WeakValueDictionary()
        self._saved: list[tuple[Inode, dict]] | None = None
        self._made: list[tuple[Inode, Inode | None, str]] = []
        self.digesting: dict[int, Inode] = {}  # files hashed while written, kept until the commit (filedata.py)
        self.seal_chunks = False  # keep big files written in order as one file per chunk (datafiles.py)
        self.sealed_files: dict[int, Inode] = {}  # ... those that are, by id
        try:
            found = self.db.get_state(STATE_KEY)
            if found is None:
                raise ValueError(f"{path}: not a draft")
            self.state = DraftState.from_json(found)
            self._next = self.db.max_id() + 1
            self.root = self.load(ROOT)
        except BaseException:
            self.db.close()  # (meta.db stays locked while open: meta.py)
            raise

    @classmethod
    def create(cls, path: str, io: TreeIO, fetch: Fetch, owner: tuple[int, int], state: DraftState) -> "Draft":
        """A new draft equal to state.base (empty when there is none)."""
        os.makedirs(os.path.join(path, "data"), mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        db = MetaDB(os.path.join(path, DB_FILE))
        t = state.base_mtime_ns or time.time_ns()
        subdirs = _subdirs(io.load(state.base_root)) if state.base_root else 0
        root = Inode(ROOT, stat.S_IFDIR | 0o755, owner[0], owner[1], 2 + subdirs, t, t, t, tree=state.base_root,
                     token=f"i{ROOT}")
        try:
            with db.tx():
                db.put(root.row())
                db.set_state(STATE_KEY, state.to_json())
        finally:
            db.close()
        return cls(path, io, fetch, owner)

    def close(self) -> None:
        self.db.close()

    # -- attributes for the next commit ---------------------------------------------------
    def set_pending(self, key: str, value: object) -> None:
        """description, metadata, aliases, tags (None removes); persisted at once."""
        with self.change():
            if value is None:
                self.state.attrs.pop(key, None)
            else:
                self.state.attrs[key] = value
            self.save_state()

    def set_type(self, type_: str) -> None:
        with self.change():
            self.state.type = type_
            self.save_state()

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def change(self, *touched: Inode) -> Iterator[None]:
        """One atomic change: a meta.db transaction; on error the inodes given (and
        any touched later with touch()) get their fields back."""
        with self.db.lock:
            outer = self._saved is None
            if not outer:
                self.touch(*touched)
                yield
                return
            self._saved, self._made = [], []
            self.touch(*touched)
            try:
                with self.db.tx():
                    yield
            except BaseException:
                for ino, fields in reversed(self._saved):
                    ino.__dict__.update(fields)
                for ino, parent, name in reversed(self._made):
                    self._by_id.pop(ino.id, None)
                    ino.id, ino.parent, ino.name = 0, parent, name
                raise
            finally:
                self._saved = None

    def touch(self, *inodes: Inode) -> None:
        assert self._saved is not None
        for ino in inodes:
            self._saved.append((ino, {k: v for k, v in ino.__dict__.items() if k not in _NOT_RESTORED}))

    @property
    def dirty(self) -> bool:  # anything changed since the last commit (attributes for the next included)?
        return self.state.dirty or bool(self.state.attrs)

    def mark_dirty(self) -> None:  # the first change after a commit records that the draft has changes
        if not self.state.dirty:
            with self.change():
                self._dirty()

    def save_state(self) -> None:
        self.db.set_state(STATE_KEY, self.state.to_json())

    # -- finding inodes ----------------------------------------------------------------
    def load(self, ino: int) -> Inode:
        with self.db.lock:
            found = self._by_id.get(ino)
            if found is None:
                row = self.db.row(ino)
                if row is None:
                    raise posix_error(errno.ENOENT)
                found = self._by_id[ino] = Inode.of_row(row)
            return found

    def _of_row(self, row) -> Inode:  # type: ignore[no-untyped-def]
        found = self._by_id.get(row.id)
        if found is None:
            found = self._by_id[row.id] = Inode.of_row(row)
        return found

    def virtual(self, parent: Inode, name: str, entry: Entry) -> Inode:
        """The inode of a base entry showing in `parent` (the same object while held)."""
        key = (parent.token, name)
        found = self._virtual.get(key)
        if found is not None and found.parent is parent:
            if isinstance(entry, DirEntry) and found.is_dir:
                found.tree = entry.tree  # a folder stays itself while the base moves
                return found
            if isinstance(entry, FileEntry) and found.is_reg and found.base == entry:
                return found
            if isinstance(entry, SymlinkEntry) and found.is_link and found.target == entry.target:
                return found
        t = self.state.base_mtime_ns
        o = self.owner
        what = "dir" if isinstance(entry, DirEntry) else json.dumps(entry.to_json(), sort_keys=True)
        where = f"{parent.token}\0{name}\0{what}".encode("utf-8", "surrogateescape")
        token = "v" + xxhash.xxh3_64_hexdigest(where)  # the same base entry, the same st_ino
        if isinstance(entry, DirEntry):
            ino = Inode(0, stat.S_IFDIR | 0o755, o[0], o[1], 2 + _subdirs(self.io.load(entry.tree)), t, t, t,
                        tree=entry.tree, parent=parent, name=name, token=token)
        elif isinstance(entry, SymlinkEntry):
            ino = Inode(0, stat.S_IFLNK | 0o777, o[0], o[1], 1, t, t, t, target=entry.target, parent=parent,
                        name=name, token=token)
        else:
            t = entry.mtime_ns or t
            ino = Inode(0, mode_of(entry), o[0], o[1], 1, t, t, t, base=entry, parent=parent, name=name,
                        token=token)
        self._virtual[key] = ino
        return ino

    def base_names(self, d: Inode) -> dict[str, Entry]:
        return self.io.load(d.tree) if d.tree else {}

    def child(self, d: Inode, name: str) -> Inode | None:
        """What `name` in folder `d` is, or None."""
        with self.db.lock:
            if d.id:
                found, ino = self.db.dentry(d.id, name)
                if found:
                    return None if ino is None else self.load(ino)
            entry = self.base_names(d).get(name)
            return None if entry is None else self.virtual(d, name, entry)

    def lookup(self, d: Inode, name: str) -> Inode:
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise posix_error(errno.ENAMETOOLONG, name)
        self._need_dir(d)
        try:
            name.encode()
        except UnicodeEncodeError:
            raise posix_error(errno.ENOENT, name) from None  # no entry can have such a name
        found = self.child(d, name)
        if found is None:
            raise posix_error(errno.ENOENT, name)
        return found

    def readdir(self, d: Inode) -> list[tuple[str, Inode]]:
        """The entries of a folder, in name order."""
        self._need_dir(d)
        with self.db.lock:
            rows = self.db.children(d.id) if d.id else []
            out = {name: self._of_row(row) for name, row in rows if row is not None}
            hidden = {name for name, row in rows}
            for name, entry in self.base_names(d).items():
                if name not in hidden:
                    out[name] = self.virtual(d, name, entry)
        return sorted(out.items())

    def visible(self, d: Inode) -> bool:  # does the folder show anything?
        with self.db.lock:
            if d.id and self.db.has_children(d.id):
                return True
            return any(not d.id or not self.db.dentry(d.id, n)[0] for n in self.base_names(d))

    def _need_dir(self, d: Inode) -> None:
        if not d.is_dir:
            raise posix_error(errno.ENOTDIR)
        if d.nlink == 0:
            raise posix_error(errno.ENOENT)  # a removed folder takes no new entries

    def parent_of(self, d: Inode) -> Inode | None:
        if d.id:
            found = self.db.parent_of(d.id)
            return None if found is None else self.load(found[0])
        return d.parent

    def _below(self, d: Inode, top: Inode) -> bool:
        """Is folder d `top` or inside it?"""
        node: Inode | None = d
        while node is not None:
            if node is top:
                return True
            if node.id == ROOT:
                return False
            node = self.parent_of(node)
        return False

    # -- materializing -------------------------------------------------------------------
    def materialize(self, ino: Inode) -> None:
        """Give a virtual inode (and the folders above it) a row; inside change()."""
        if ino.id:
            return
        parent, name = ino.parent, ino.name
        if parent is not None:
            self.materialize(parent)
        ino.id = self._next
        self._next += 1
        self._made.append((ino, parent, name))
        self.db.put(ino.row())
        if parent is not None:
            self.db.set_dentry(parent.id, name, ino.id)
            if self._virtual.get((parent.token, name)) is ino:
                del self._virtual[(parent.token, name)]
        ino.parent, ino.name = None, ""
        self._by_id[ino.id] = ino

    def save(self, ino: Inode) -> None:
        """Write an inode's fields to its row (materializing it first); inside change()."""
        if not ino.id:
            self.materialize(ino)
        else:
            self.db.put(ino.row())

    def _drop_name(self, d: Inode, name: str) -> None:
        """Remove `name` from folder d: a whiteout if the base has it."""
        if name in self.base_names(d):
            self.db.set_dentry(d.id, name, None)
        else:
            self.db.drop_dentry(d.id, name)

    def unlinked(self, ino: Inode, t: int) -> None:
        """One name of `ino` is gone (at time t, ns); in a change(), with `ino` touched."""
        ino.nlink = 0 if ino.is_dir else ino.nlink - 1
        ino.ctime = t
        if ino.id:
            self.db.put(ino.row())
        else:
            self.touch(ino)
            ino.parent, ino.name = None, ""  # a base file gone from the tree, still readable while held

    def _stamp_dir(self, d: Inode, t: int, links: int = 0) -> None:
        d.mtime = d.ctime = t
        d.nlink += links
        self.save(d)

    # -- changes -------------------------------------------------------------------------
    def make(self, d: Inode, name: str, mode: int, uid: int, gid: int, rdev: int = 0,
             target: str | None = None) -> Inode:
        """A new file (S_IFREG: empty and staged), folder, symlink, fifo, socket or
        device, owned by uid and gid, or by the folder's group when the folder is
        setgid (new folders then are setgid too), as on ext4."""
        check_name(name)
        if d.mode & stat.S_ISGID:
            gid = d.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        with self.change(d):
            self._need_dir(d)
            if self.child(d, name) is not None:
                raise posix_error(errno.EEXIST, name)
            self.materialize(d)
            t = time.time_ns()
            ino = Inode(self._next, mode, uid, gid, 2 if stat.S_ISDIR(mode) else 1, t, t, t, rdev,
                        staged=stat.S_ISREG(mode), target=target, token=f"i{self._next}")
            self._next += 1
            if ino.is_reg:
                os.close(os.open(self.data_path(ino), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            try:
                self.db.put(ino.row())
                self.db.set_dentry(d.id, name, ino.id)
                self._stamp_dir(d, t, 1 if ino.is_dir else 0)
                self._dirty()
            except BaseException:
                if ino.is_reg:
                    os.unlink(self.data_path(ino))
                raise
            self._by_id[ino.id] = ino
        return ino

    def link(self, ino: Inode, d: Inode, name: str) -> None:
        check_name(name)
        with self.change(d, ino):
            self._need_dir(d)
            if self.child(d, name) is not None:
                raise posix_error(errno.EEXIST, name)
            if ino.is_dir:
                raise posix_error(errno.EPERM, name)
            if ino.nlink == 0:
                raise posix_error(errno.ENOENT, name)
            self.materialize(d)
            self.materialize(ino)
            t = time.time_ns()
            ino.nlink += 1
            ino.ctime = t
            self.db.put(ino.row())
            self.db.set_dentry(d.id, name, ino.id)
            self._stamp_dir(d, t)
            self._dirty()

    def unlink(self, d: Inode, name: str) -> Inode:
        return self._remove(d, name, folder=False)

    def rmdir(self, d: Inode, name: str) -> Inode:
        return self._remove(d, name, folder=True)

    def _remove(self, d: Inode, name: str, folder: bool) -> Inode:
        """unlink(2) or rmdir(2); returns the inode that lost the name."""
        with self.change(d):
            self._need_dir(d)
            ino = self.child(d, name)
            if ino is None:
                raise posix_error(errno.ENOENT, name)
            if ino.is_dir != folder:
                raise posix_error(errno.ENOTDIR if folder else errno.EISDIR, name)
            if folder and self.visible(ino):
                raise posix_error(errno.ENOTEMPTY, name)
            self.touch(ino)
            self.materialize(d)
            t = time.time_ns()
            self._drop_name(d, name)
            if folder and ino.id:
                self.db.delete_entries(ino.id)
            self.unlinked(ino, t)
            self._stamp_dir(d, t, -1 if folder else 0)
            self._dirty()
        return ino

    def rename(self, od: Inode, oname: str, nd: Inode, nname: str, noreplace: bool = False,
               exchange: bool = False) -> Inode | None:
        """rename(2), also RENAME_NOREPLACE and RENAME_EXCHANGE; returns the inode
        that lost its name (replaced), if any."""
        check_name(nname)
        with self.change(od, nd):
            self._need_dir(od)
            self._need_dir(nd)
            src = self.child(od, oname)
            if src is None:
                raise posix_error(errno.ENOENT, oname)
            dst = self.child(nd, nname)
            if src is dst:
                return None
            dst_dir = None if dst is None else dst.is_dir
            check_rename(src.is_dir, dst_dir, src.is_dir and self._below(nd, src),
                         bool(dst_dir) and self._below(od, dst), bool(dst_dir) and self.visible(dst),
                         noreplace, exchange, nname)
            self.touch(src, *([dst] if dst is not None else []))
            self.materialize(od)
            self.materialize(nd)
            self.materialize(src)
            t = time.time_ns()
            links = {od.token: 0, nd.token: 0}  # st_nlink of folders: 2 + sub-folders
            if src.is_dir:
                links[od.token] -= 1
                links[nd.token] += 1
            lost = None
            if exchange:
                assert dst is not None
                self.materialize(dst)
                if dst.is_dir:
                    links[nd.token] -= 1
                    links[od.token] += 1
                self.db.set_dentry(od.id, oname, dst.id)
                dst.ctime = t
                self.db.put(dst.row())
            else:
                self._drop_name(od, oname)
                if dst is not None:
                    if dst.is_dir:
                        links[nd.token] -= 1
                        if dst.id:
                            self.db.delete_entries(dst.id)
                    self.unlinked(dst, t)
                    lost = dst
            self.db.set_dentry(nd.id, nname, src.id)
            src.ctime = t
            self.db.put(src.row())
            self._stamp_dir(od, t, links[od.token])
            if od is not nd:
                self._stamp_dir(nd, t, links[nd.token])
            self._dirty()
        return lost

    def set_attrs(self, ino: Inode, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                  atime: int | None = None, mtime: int | None = None, ctime: int | None = None) -> None:
        """chmod (permission bits, setuid, setgid and sticky included), chown, and
        the times of an inode not staged; ctime moves to now (or `ctime`)."""
        with self.change(ino):
            if mode is not None:
                ino.mode = stat.S_IFMT(ino.mode) | (mode & 0o7777)
            if uid is not None:
                ino.uid = uid
            if gid is not None:
                ino.gid = gid
            if atime is not None:
                ino.atime = atime
            if mtime is not None:
                ino.mtime = mtime
            ino.ctime = time.time_ns() if ctime is None else ctime
            self.save(ino)
            self._dirty()

    def forget(self, ino: Inode) -> None:
        """The last holder let go of `ino` (the kernel forgot it): an inode without
        names is removed with its data."""
        with self.db.lock:
            if ino.id and ino.nlink <= 0 and ino.id != ROOT:
                with self.change():
                    self.db.delete(ino.id)
                self._by_id.pop(ino.id, None)
                self.digesting.pop(ino.id, None)
                remove_data(self, ino)

    def _dirty(self) -> None:
        if not self.state.dirty:
            self.state.dirty = True
            self.save_state()

    def data_path(self, ino: Inode) -> str:
        return os.path.join(self.data, str(ino.id))


def _subdirs(tree: dict[str, Entry]) -> int:
    return sum(isinstance(e, DirEntry) for e in tree.values())

