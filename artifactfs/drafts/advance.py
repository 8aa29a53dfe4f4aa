"""Moving a draft to a new base version (after its commit, or an untouched draft
to a newer latest) without touching what the user changed, in one meta.db
transaction (a killed process leaves the draft on the old base or the new).

Only folders with rows are visited: a folder overlaying the old base sub-tree
gets the new one (so everything nobody changed follows at once, the other
writer's changes included); after a commit, plain folders (made by the user)
overlay what was just committed.  Folders the user moved stay as they are
(the commit took them as they are).

Every other entry with a row was either taken by the commit (its changes:
`kept`, it stays as it is) or shows what the old base has at its name: then
it shows what the new version has there, whatever kind the entry is (staged,
linked, a symlink, chmod'ed): a regular file with one name keeps its inode and
shows the new entry; anything else loses the name and the version's entry
shows there.  Only what a version cannot hold (a fifo, a name left out) stays.
So a draft shows the version it advanced to exactly, plus the user's changes:
when the commit was rebased onto another writer's version (or an untouched
draft follows one), their changes show, and the next commit does not publish
the old entries again, undoing theirs.  Whiteouts go once the version has no
such name, or when they were not the commit's (the version has the name).

reclaim() then gives back the disk space of staged files committed as they
are: the same inode shows the committed entry instead of its data file, so
whoever holds it reads the same bytes.  A data file that became the blob
itself (a file of one chunk into a local store, linked) holds no space of its
own: it stays, staged, and the commit's stamp spares the next commit reading it.
A file kept as one file per chunk (datafiles.py) is given back whole: its
pieces are blobs too, but the store keeps its own names of them."""
from __future__ import annotations

import stat
import time
from collections.abc import Collection
from dataclasses import dataclass

from ..registry.manifest import DirEntry, Entry, FileEntry
from .datafiles import data_stat, remove_data
from .engine import Draft, mode_of
from .inode import Inode


def advance(draft: Draft, version: int, root: str, mtime_ns: int, stamps: dict | None,
            kept: Collection[str] = ()) -> list[Inode]:
    """Make `version` (whose tree is `root`, made at mtime_ns) the draft's base.
    `stamps` are the staged files' stamps its commit recorded (None: keep those
    of the last commit); `kept` are the paths that commit took from the draft
    (its changes; none when an untouched draft follows a newer latest): every
    other entry with a row shows what the old base has at its name, and so
    shows what `version` has there.  Returns the inodes whose bytes or names
    changed (the mount drops what the kernel cached of them)."""
    changed: list[Inode] = []
    given_back: list[Inode] = []
    with draft.change():
        _merge(draft, draft.root, "", draft.state.base_root, root, mtime_ns,
               _Moved(set(kept), _folders_of(kept), changed, given_back))
        st = draft.state
        st.base, st.base_root, st.base_mtime_ns = version, root, mtime_ns
        st.attrs, st.dirty = {}, False
        draft.save_state()
        if stamps is not None:
            draft.db.set_stamps(stamps)
    _remove_data(draft, given_back)
    if stamps is not None:
        draft.digesting.clear()  # the stamps recorded know every staged file now
    return changed


@dataclass
class _Moved:
    """What one advance keeps and collects as it walks the folders with rows."""

    kept: set[str]              # paths the commit took from the draft: they stay as they are
    kept_in: set[str]           # the folders those paths are in (at any depth)
    changed: list[Inode]        # inodes whose bytes or names changed
    given_back: list[Inode]     # staged files that show a version's entry now (data to remove)


def _folders_of(paths: Collection[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        while "/" in p:
            p = p.rsplit("/", 1)[0]
            if p in out:
                break
            out.add(p)
    return out


def _tree(draft: Draft, key: str | None) -> dict[str, Entry]:
    return draft.io.load(key) if key else {}


def _sub(e: Entry | None) -> str | None:
    return e.tree if isinstance(e, DirEntry) else None


def _merge(draft: Draft, d: Inode, prefix: str, old: str | None, new: str | None, mtime_ns: int,
           moved: _Moved) -> None:
    """Folder d (at path `prefix`), whose version content goes from tree `old` to `new`."""
    if d.tree is not None and d.tree not in (old, new):
        return  # a folder the user moved here: the commit took it as it is
    if d.tree != new:
        draft.touch(d)
        d.tree = new
        draft.db.put(d.row())
    a, b = _tree(draft, old), _tree(draft, new)
    for name, row in draft.db.children(d.id):
        path = f"{prefix}/{name}" if prefix else name
        if row is None:
            if name not in b or path not in moved.kept:  # the deletion is in the version now,
                draft.db.drop_dentry(d.id, name)  # or the new version has the name again
        elif stat.S_ISDIR(row.mode):
            sub = draft.load(row.id)
            _merge(draft, sub, path, _sub(a.get(name)), _sub(b.get(name)), mtime_ns, moved)
            if (isinstance(a.get(name), DirEntry) and not isinstance(b.get(name), DirEntry)
                    and path not in moved.kept and path not in moved.kept_in and not draft.db.children(sub.id)):
                _lose_name(draft, d, name, sub, moved.changed)  # emptied by the other writer, not by the user
        elif path not in moved.kept:
            _show_new(draft, d, name, draft.load(row.id), a.get(name), b.get(name), mtime_ns, moved)


def _show_new(draft: Draft, d: Inode, name: str, ino: Inode, o: Entry | None, n: Entry | None, mtime_ns: int,
              moved: _Moved) -> None:
    """Entry `name` of folder d, not changed by the user since the old base (so it
    shows `o`, what that base has there), when the base moves on to `n`."""
    if o is None or o == n:
        return  # not from a version (a fifo, a name left out), or the same in the new one
    if isinstance(n, FileEntry) and ino.is_reg and ino.nlink == 1:
        draft.touch(ino)
        if ino.staged:
            moved.given_back.append(ino)
        ino.staged, ino.base, ino.mode = False, n, mode_of(n)
        ino.uid, ino.gid = draft.owner
        ino.atime = ino.mtime = n.mtime_ns or mtime_ns
        draft.db.put(ino.row())
        moved.changed.append(ino)
    else:
        _lose_name(draft, d, name, ino, moved.changed)


def _lose_name(draft: Draft, d: Inode, name: str, ino: Inode, changed: list[Inode]) -> None:
    """`name` leaves folder d; the new base's entry there, if any, shows instead."""
    draft.touch(ino)
    draft.db.drop_dentry(d.id, name)
    draft.unlinked(ino, time.time_ns())
    changed.append(ino)


def _remove_data(draft: Draft, inodes: list[Inode]) -> None:
    """Remove the data files (or pieces) of staged files that show a base entry now."""
    for ino in inodes:
        remove_data(draft, ino)
        ino.running = None


def reclaim(draft: Draft) -> int:
    """Staged files whose data file is unchanged since the last commit hashed it,
    and which the base now holds exactly (content, executable bit, mtime), show
    the base entry again; their data files are removed.  Run with the draft's
    changes held off.  Returns how many files were given back."""
    stamps = draft.db.stamps()
    done: list[Inode] = []
    with draft.change():
        _reclaim_dir(draft, draft.root, stamps, done)
    _remove_data(draft, done)
    return len(done)


def _reclaim_dir(draft: Draft, d: Inode, stamps: dict, done: list[Inode]) -> None:
    base = _tree(draft, d.tree)
    for name, row in draft.db.children(d.id):
        if row is None:
            continue
        if stat.S_ISDIR(row.mode):
            _reclaim_dir(draft, draft.load(row.id), stamps, done)
            continue
        rec, b = stamps.get(row.id), base.get(name)
        if not row.staged or rec is None or not isinstance(b, FileEntry):
            continue
        ino = draft.load(row.id)
        if not ino.staged:
            continue  # a second name of a file given back already
        try:
            st = data_stat(draft, ino)
        except FileNotFoundError:
            continue
        if st.st_nlink > 1 and not ino.sealed:
            continue  # the data file is the version's blob itself (tostore.py): nothing to give back
        content = FileEntry.from_json(rec[4])
        if ([st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] != rec[:4] or b.mtime_ns != st.st_mtime_ns
                or not b.same_content(FileEntry(content.digest, content.size, content.chunks,
                                                bool(ino.mode & 0o111)))):
            continue
        draft.touch(ino)
        ino.staged, ino.base = False, b
        ino.atime, ino.mtime, ino.ctime = st.st_atime_ns, st.st_mtime_ns, max(ino.ctime, st.st_ctime_ns)
        draft.db.put(ino.row())
        done.append(ino)
