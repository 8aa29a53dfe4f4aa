"""What the mount may answer on its event loop: answers from memory alone (no
query, no disk, no store), given only when no change of the draft is half-made
(the draft's lock is free now: it is never waited for).  Anything else is
asked of the engine in a worker thread.

Copying many small files into a draft makes the kernel send, per file, a
lookup of the new name and a getattr of its folder (whose attributes every
create invalidates) besides the create and the write: answering those two here
saves two worker-thread trips per file."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .engine import Draft
from .filedata import shown
from .inode import Attr, Inode


@contextmanager
def unless_busy(draft: Draft) -> Iterator[bool]:
    """The draft's lock if it is free now (True) or nothing (False), without waiting."""
    got = draft.db.lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            draft.db.lock.release()


def attributes(draft: Draft, ino: Inode) -> Attr | None:
    """filedata.attributes() of anything but a staged regular file (whose size and
    times are its data file's); None: ask filedata.attributes()."""
    with unless_busy(draft) as free:
        return shown(ino) if free and not (ino.is_reg and ino.staged) else None


def surely_absent(draft: Draft, d: Inode, name: str) -> bool:
    """Is there surely no `name` in folder d?  Known for a folder made in the
    draft (no base sub-tree) whose names meta.db keeps in memory; False means
    "ask Draft.lookup()"."""
    with unless_busy(draft) as free:
        return free and d.is_dir and d.nlink > 0 and d.id != 0 and d.tree is None and draft.db.absent(d.id, name)
