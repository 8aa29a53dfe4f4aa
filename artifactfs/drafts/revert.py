"""Discarding the changes of a draft (`artifactfs discard`): it then shows a
version (its collection's latest) exactly, as a draft made now would, in one
meta.db transaction (a killed process leaves the draft as it was, or discarded).

Every entry with a row loses its name, the deepest first, as `rm -rf` of the
changed entries would take them: an inode someone still holds (an open file, a
process's current directory) keeps its bytes until it is let go
(Draft.forget), as an unlinked file does; whiteouts go, so removed entries show
again; the root shows the version's tree with the draft's default owner and
mode.  The attributes pending for the next commit (aliases, tags, description,
metadata, set on the draft folder) go too.  What a version cannot hold (fifos,
ownership, empty folders) goes with the rest: it was a change of the draft."""
from __future__ import annotations

import stat
import time
from dataclasses import dataclass, field

from ..registry.manifest import DirEntry
from .engine import Draft
from .inode import Inode


@dataclass
class Discarded:
    """What a discard took away."""

    changed: list[Inode] = field(default_factory=list)   # inodes that lost their names, and the root
    names: list[tuple[Inode, str]] = field(default_factory=list)  # (folder, name) dentries that went


def discard_changes(draft: Draft, version: int, root: str, mtime_ns: int) -> Discarded:
    """Make the draft show `version` (tree `root`, made at mtime_ns) and nothing
    else; returns what went (the mount drops what the kernel cached of it).  Run
    with the draft's changes held off (LiveDraft's gate)."""
    out = Discarded()
    with draft.change():
        _drop(draft, draft.root, out)
        top = draft.root
        draft.touch(top)
        subdirs = sum(isinstance(e, DirEntry) for e in draft.io.load(root).values())
        top.tree, top.mode, top.nlink = root, stat.S_IFDIR | 0o755, 2 + subdirs
        top.uid, top.gid = draft.owner
        top.mtime = top.ctime = time.time_ns()
        draft.db.put(top.row())
        out.changed.append(top)
        st = draft.state
        st.base, st.base_root, st.base_mtime_ns = version, root, mtime_ns
        st.attrs, st.dirty = {}, False
        draft.save_state()
        draft.db.set_stamps({})
    draft.digesting.clear()
    return out


def _drop(draft: Draft, d: Inode, out: Discarded) -> None:
    """Every entry with a row below folder d loses its name, the deepest first."""
    for name, row in draft.db.children(d.id):
        out.names.append((d, name))
        draft.db.drop_dentry(d.id, name)
        if row is None:
            continue  # a whiteout: the version's entry shows again
        ino = draft.load(row.id)
        if ino.is_dir:
            _drop(draft, ino, out)
        draft.touch(ino)
        draft.unlinked(ino, time.time_ns())
        out.changed.append(ino)
