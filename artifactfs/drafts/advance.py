"""Moving a draft to a new base version (after its commit, or an untouched draft
to a newer latest) without touching what the user changed, in one meta.db
transaction (a killed process leaves the draft on the old base or the new).

Only folders with rows are visited: a folder overlaying the old base sub-tree
gets the new one (so everything nobody changed follows at once, the other
writer's changes included); after a commit, plain folders (made by the user)
overlay what was just committed; whiteouts of names the new version no longer
has are dropped (the deletion is committed, and a name someone adds back later
must show); files still equal to the old base follow the new one.  Folders the
user moved stay as they are (the commit took them as they are).

reclaim() then gives back the disk space of staged files committed as they
are: the same inode shows the committed entry instead of its data file, so
whoever holds it reads the same bytes.  A data file that became the blob
itself (a file of one chunk into a local store, linked) holds no space of its
own: it stays, staged, and the commit's stamp spares the next commit reading it.
A file kept as one file per chunk (datafiles.py) is given back whole: its
pieces are blobs too, but the store keeps its own names of them.

An *untouched* draft (no change since its base: docs/drafts.md) that moves to
a newer latest shows that latest exactly: every entry it has rows for shows
what the old base has at its name (that is what untouched means), so a name
the new version changed or removed shows the new version's entry, whatever
kind the entry is (staged, linked, a symlink, chmod'ed).  A regular file with
one name keeps its inode and shows the new entry; anything else loses the name
and the base's entry shows there.  Only what a version cannot hold (a fifo, a
name left out) stays as it is.  Otherwise the next commit would publish the
old entries again, undoing the other writer's change."""
from __future__ import annotations

import os
import stat

from ..registry.manifest import DirEntry, Entry, FileEntry
from .datafiles import data_stat, remove_pieces
from .engine import Draft, mode_of
from .inode import Inode


def advance(draft: Draft, version: int, root: str, mtime_ns: int, stamps: dict | None,
            untouched: bool = False) -> list[Inode]:
    """Make `version` (whose tree is `root`, made at mtime_ns) the draft's base;
    `stamps` are the staged files' stamps its commit recorded (None: keep
    those of the last commit).  `untouched`: the draft shows its base exactly
    (as a commit would record it), so it is to show `version` exactly.  Returns
    the inodes whose bytes or names changed (the mount drops what the kernel
    cached of them)."""
    changed: list[Inode] = []
    given_back: list[Inode] = []
    with draft.change():
        _merge(draft, draft.root, draft.state.base_root, root, mtime_ns, changed,
               given_back if untouched else None)
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


def _tree(draft: Draft, key: str | None) -> dict[str, Entry]:
    return draft.io.load(key) if key else {}


def _sub(e: Entry | None) -> str | None:
    return e.tree if isinstance(e, DirEntry) else None


def _merge(draft: Draft, d: Inode, old: str | None, new: str | None, mtime_ns: int, changed: list[Inode],
           untouched: list[Inode] | None) -> None:
    """Folder d, whose version content goes from tree `old` to `new`.  `untouched`:
    the draft has no change since `old` (it collects the staged files whose data
    is to be removed), None after a commit."""
    if d.tree is not None and d.tree not in (old, new):
        return  # a folder the user moved here: the commit took it as it is
    if d.tree != new:
        draft.touch(d)
        d.tree = new
        draft.db.put(d.row())
    a, b = _tree(draft, old), _tree(draft, new)
    for name, row in draft.db.children(d.id):
        if row is None:
            if name not in b or untouched is not None:  # the deletion is in the version now,
                draft.db.drop_dentry(d.id, name)  # or (untouched) the new version has the name again
        elif stat.S_ISDIR(row.mode):
            sub = draft.load(row.id)
            _merge(draft, sub, _sub(a.get(name)), _sub(b.get(name)), mtime_ns, changed, untouched)
            if (untouched is not None and isinstance(a.get(name), DirEntry) and not isinstance(b.get(name), DirEntry)
                    and not draft.db.children(sub.id)):
                _lose_name(draft, d, name, sub, changed)  # a folder of the old base the new one has not
        elif untouched is not None:
            _show_new(draft, d, name, draft.load(row.id), a.get(name), b.get(name), mtime_ns, changed, untouched)
        elif not row.staged and row.base is not None:
            _follow(draft, d, name, draft.load(row.id), a.get(name), b.get(name), mtime_ns, changed)


def _follow(draft: Draft, d: Inode, name: str, ino: Inode, o: Entry | None, n: Entry | None, mtime_ns: int,
            changed: list[Inode]) -> None:
    """A file with a row but showing the old base exactly follows the new base."""
    if o == n or not isinstance(o, FileEntry):
        return
    if (ino.base != o or ino.mode != mode_of(o) or (ino.uid, ino.gid) != draft.owner or ino.nlink != 1
            or ino.mtime != (o.mtime_ns or draft.state.base_mtime_ns)):
        return  # the user's (a chmod, a link, a time)
    draft.touch(ino)
    if isinstance(n, FileEntry):
        ino.base, ino.mode = n, mode_of(n)
        ino.atime = ino.mtime = n.mtime_ns or mtime_ns
        draft.db.put(ino.row())
    else:  # gone, or not a file any more: the new base shows
        draft.db.drop_dentry(d.id, name)
        ino.nlink = 0
        draft.db.put(ino.row())
    changed.append(ino)


def _show_new(draft: Draft, d: Inode, name: str, ino: Inode, o: Entry | None, n: Entry | None, mtime_ns: int,
              changed: list[Inode], given_back: list[Inode]) -> None:
    """An untouched draft's entry `name`, which shows `o`, when the base moves on to `n`."""
    if o is None or o == n:
        return  # not from a version (a fifo, a name left out), or the same in the new one
    if isinstance(n, FileEntry) and ino.is_reg and ino.nlink == 1:
        draft.touch(ino)
        if ino.staged:
            given_back.append(ino)
        ino.staged, ino.base, ino.mode = False, n, mode_of(n)
        ino.uid, ino.gid = draft.owner
        ino.atime = ino.mtime = n.mtime_ns or mtime_ns
        draft.db.put(ino.row())
        changed.append(ino)
    else:
        _lose_name(draft, d, name, ino, changed)


def _lose_name(draft: Draft, d: Inode, name: str, ino: Inode, changed: list[Inode]) -> None:
    """`name` leaves folder d; the new base's entry there, if any, shows instead."""
    draft.touch(ino)
    draft.db.drop_dentry(d.id, name)
    ino.nlink = 0 if ino.is_dir else ino.nlink - 1
    draft.db.put(ino.row())
    changed.append(ino)


def _remove_data(draft: Draft, inodes: list[Inode]) -> None:
    """Remove the data files (or pieces) of staged files that show a base entry now."""
    for ino in inodes:
        path, n = draft.data_path(ino), ino.sealed
        ino.sealed, ino.running = 0, None
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        remove_pieces(path, n)


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
