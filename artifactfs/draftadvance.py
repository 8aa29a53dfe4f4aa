"""Moving a draft to a new base version (after its commit, or an untouched draft to
a newer latest) without touching what the user changed.

Walking only what is on disk: a lazy folder still over the old base sub-tree gets
the new one (so everything not on disk follows at once); stand-ins still equal to
the old base entry are dropped or replaced; whiteouts of names the new version no
longer has are dropped (the deletion is committed, and a file someone adds back
later must show).  After a commit, plain folders (made by the user) become lazy
ones over their new sub-tree, and real files committed as they are (stamp
unchanged, not open, a mode the version holds) are removed, so the new base shows
the same bytes and the staging tree does not keep a copy of everything ever
written (reclaim(), run before the commit answers).  The user's placeholders (chmod) and folders the user moved stay as they
are.  The move is journaled in draft.json and finished on the next load if the
process dies midway."""
from __future__ import annotations

import os
import shutil
import stat

from .manifest import DirEntry, Entry, FileEntry
from .draftstate import TMP
from .staging import Draft
from .standins import (LAZY, WHITEOUT, is_internal, is_placeholder, join, lazy_of, mode_of, same_as_base, summary,
                       whiteout_name, write_lazy)


def advance(draft: Draft, version: int, root: str, mtime_ns: int, clean: dict) -> list[str]:
    """Make `version` (whose tree is `root`) the draft's base; returns the paths
    whose content changed on disk (for the mount to drop cached pages)."""
    draft.state.advancing = {"version": version, "root": root, "mtime_ns": mtime_ns, "clean": clean}
    draft.save_state()
    changed: list[str] = []
    _merge(draft, draft.tree, "", draft.state.base_root, root, changed)
    _prune(draft, draft.tree)
    draft.state.base, draft.state.base_root, draft.state.base_mtime_ns = version, root, mtime_ns
    draft.state.attrs, draft.state.clean, draft.state.advancing = {}, clean, None
    draft.save_state()
    return changed


def reclaim(draft: Draft, busy: frozenset[int] = frozenset()) -> list[str]:
    """Give back the disk space of files committed as they are: a real file whose
    stamp still equals the one recorded at the last commit (draft.state.clean) and
    whose bytes and mode are the base's is removed, so the base shows the same
    bytes; files open for writing (their inode in `busy`) stay.  Run any time
    after a commit, with the draft's changes held off.  Returns the paths removed
    (the mount drops what it cached about them)."""
    removed: list[str] = []
    _prune(draft, draft.tree, _Committed(draft.state.clean, busy), "", removed)
    return removed


def _tree(draft: Draft, key: str | None) -> dict[str, Entry]:
    return draft.io.load(key) if key else {}


class _Committed:
    """Which real files hold exactly what the new version has for them."""

    def __init__(self, clean: dict, busy: frozenset[int]):
        self.clean = clean
        self.busy = busy

    def same(self, st: os.stat_result, entry: Entry | None) -> bool:
        rec = self.clean.get(str(st.st_ino))
        if (not isinstance(entry, FileEntry) or rec is None or st.st_ino in self.busy
                or rec[:3] != [st.st_size, st.st_mtime_ns, st.st_ctime_ns] or st.st_nlink != 1):
            return False
        done = FileEntry.from_json(rec[3])
        return ((done.digest, done.size) == (entry.digest, entry.size)
                and stat.S_IMODE(st.st_mode) & 0o7777 == mode_of(entry))


def _merge(draft: Draft, disk: str, path: str, old: str | None, new: str | None, changed: list[str]) -> None:
    """The folder `disk`, whose version content goes from tree `old` to `new`."""
    lazy = lazy_of(disk)
    if lazy is not None and lazy.tree not in (old, new):
        return  # a folder the user moved here: the commit took it as it is
    a, b = _tree(draft, old), _tree(draft, new)
    if lazy is None and new is not None:
        # A plain folder holds exactly what was just committed (only a committed
        # draft has plain folders): it becomes a lazy one over its new tree.
        write_lazy(disk, DirEntry(new, *summary(b)))
    elif lazy is not None and lazy.tree != new:
        if new is not None:
            write_lazy(disk, DirEntry(new, *summary(b)))
        else:  # gone from the version: what is left on disk is all there is
            for n in os.listdir(disk):
                if n == LAZY or n.startswith(WHITEOUT):
                    os.unlink(os.path.join(disk, n))
        changed.append(path)
    lazy_now = lazy_of(disk) is not None
    names = set(os.listdir(disk))
    for name in sorted(set(a) | set(b)):
        o, n = a.get(name), b.get(name)
        hidden = whiteout_name(name)
        if n is None and hidden in names:
            os.unlink(os.path.join(disk, hidden))  # the deletion is in the version now
        if o == n:
            continue
        target, p = os.path.join(disk, name), join(path, name)
        try:
            st: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is None:
            if n is not None and not lazy_now:
                draft.put_stand_in(disk, name, n)  # a plain folder shows only what is on disk
            changed.append(p)
        elif stat.S_ISDIR(st.st_mode):
            if isinstance(o, DirEntry) and _untouched(draft, target, o.tree):
                shutil.rmtree(target)  # only stand-ins of the old base: the new one shows instead
                if n is not None and not lazy_now:
                    draft.put_stand_in(disk, name, n)
            else:
                _merge(draft, target, p, o.tree if isinstance(o, DirEntry) else None,
                       n.tree if isinstance(n, DirEntry) else None, changed)
            changed.append(p)
        elif same_as_base(target, st, o):
            if n is not None and not lazy_now:
                draft.put_stand_in(disk, name, n)
            else:
                os.unlink(target)  # the (new) base shows through again
            changed.append(p)


def _prune(draft: Draft, disk: str, committed: "_Committed | None" = None, path: str = "",
           removed: list[str] | None = None) -> None:
    """Drop what equals what its lazy folder shows anyway: stand-ins left by a change
    since undone (chmod and back), so an unchanged draft is clean again, and real
    files just committed as they are (their bytes are the new base's now)."""
    lazy = lazy_of(disk)
    base = draft.io.load(lazy.tree) if lazy is not None else {}
    with os.scandir(disk) as it:
        found = [de for de in it if not is_internal(de.name)]
    names = set(os.listdir(disk))
    for de in found:
        b = base.get(de.name)
        st = de.stat(follow_symlinks=False)
        if whiteout_name(de.name) in names:  # redundant while something on disk hides the name
            os.unlink(os.path.join(disk, whiteout_name(de.name)))
        p = join(path, de.name)
        if stat.S_ISDIR(st.st_mode):
            _prune(draft, de.path, committed, p, removed)
            if isinstance(b, DirEntry) and _untouched(draft, de.path, b.tree):
                shutil.rmtree(de.path)
                if removed is not None:
                    removed.append(p)
        elif same_as_base(de.path, st, b) or (committed and not is_placeholder(st) and committed.same(st, b)):
            os.unlink(de.path)
            if removed is not None:
                removed.append(p)


def _untouched(draft: Draft, disk_dir: str, key: str) -> bool:
    """The folder holds nothing but stand-ins equal to the base tree `key` (it was
    only put on disk on the way to a change since undone)."""
    lazy = lazy_of(disk_dir)
    if lazy is None or lazy.tree != key or stat.S_IMODE(os.lstat(disk_dir).st_mode) != 0o755:
        return False  # not a stand-in of `key`, or chmod-ed by the user
    base = draft.io.load(key)
    with os.scandir(disk_dir) as it:
        for de in it:
            if de.name == LAZY or de.name.startswith(TMP):
                continue
            b = base.get(de.name)
            st = de.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if not (isinstance(b, DirEntry) and _untouched(draft, de.path, b.tree)):
                    return False
            elif not same_as_base(de.path, st, b):
                return False  # a real file, a changed placeholder, or a whiteout
    return True
