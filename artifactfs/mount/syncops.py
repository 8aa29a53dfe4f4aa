"""Requests answered in the patched pyfuse3's native reader threads, by a
synchronous handler (third_party/pyfuse3: syncpath.c), where pyfuse3 allows it.

Copying many small files into a draft sends five requests per file: LOOKUP of
the new name, CREATE, WRITE, RELEASE, and GETATTR of the folder (each create
invalidates its attributes).  Through the trio loop each costs a wake-up of the
loop and pyfuse3's dispatch coroutine, and the CREATE and the WRITE a trip to a
worker thread and back: 1.1-1.5 ms of daemon CPU per file, of which the draft
engine's own work is a fifth.  Here the reader thread that read the request
takes the GIL, calls `SyncAnswers.__call__`, and replies itself; it is the
worker thread, so the rule that no blocking call runs on the trio loop holds.
Answered so:

- CREATE in a folder whose create_now() takes it (a draft folder: the engine
  call of create(), through LiveDraft.change_now);
- WRITE through a handle whose write_now() takes it (a draft file opened by
  CREATE or OPEN: LiveDraft.write_now; each write reaches the data file
  before its reply, as before);
- RELEASE of a handle whose release() does nothing (releases_anywhere);
- GETATTR of a node whose attributes_now() gives them (a draft's folders and
  symlinks from memory, an unsealed staged file by one stat(2));
- LOOKUP of a name a node knows to be absent (absent_now: a folder made in
  the draft): ENOENT.

Only requests about the inodes a node kind offers (`offer`: draft nodes, from
the moment the table holds them until the kernel forgets them) reach the
handler; everything else, and every case a node declines (None), goes to
Operations on the trio loop as before.  LiveDraft.change_now declines while a commit waits or
runs (the gate counts changes from threads under a lock and never makes a
thread wait) and before the draft's base was prepared.  What these paths touch
is safe from any thread: the draft engine (thread-safe: it served worker
threads already), the inode table (each read-then-write under its lock:
inodes.py), the handle table (one dict step each), handle numbers (next() of
an itertools.count), the lineage hook (one dict key), the trio loop only
through its token (run_sync_soon).  At most as many such calls run at once as
pyfuse3 has reader threads (4), outside the `--threads` pool (threads.py)."""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import pyfuse3

from ..drafts.posixnames import NAME_MAX
from .context import CALLER
from .errnos import to_fuse_error
from .handles import Handle
from .inodes import InodeTable, Node

log = logging.getLogger("artifactfs.mount")
AVAILABLE = hasattr(pyfuse3, "fastpath_set_sync_handler")
FUSE_LOOKUP, FUSE_GETATTR, FUSE_WRITE, FUSE_RELEASE, FUSE_CREATE = 1, 3, 16, 18, 35  # <linux/fuse.h>
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE = 1, 2
NAMES = {FUSE_LOOKUP: "lookup", FUSE_GETATTR: "getattr", FUSE_WRITE: "write", FUSE_RELEASE: "release",
         FUSE_CREATE: "create"}
Answer = int | tuple[int, ...] | None
Opened = Callable[[Node, int, int], None]  # (node, pid, open flags)


def offer(ino: int, offered: bool) -> None:
    """Offer the requests about inode `ino` (the file of a WRITE or RELEASE, the
    folder of a LOOKUP or CREATE, the inode of a GETATTR) to the handler, or stop:
    requests about other inodes never wait for the GIL in a reader thread (which
    the trio thread may hold for a while), they go straight to the trio loop."""
    if AVAILABLE:
        pyfuse3.fastpath_sync_node(ino, offered)


class SyncAnswers:
    """The handler pyfuse3's reader threads call: (opcode, nodeid, fh, offset,
    data, uid, gid, pid) -> None (decline), -errno, bytes written or 0 (done),
    or the attribute tuple of GETATTR and CREATE (syncpath.c).  Operations
    hands over its handle table, its handle numbering (one step: itertools)
    and its open hooks (lineage.py: for a draft file, safe in any thread)."""

    def __init__(self, table: InodeTable, handles: dict[int, Handle], new_fh: Callable[[], int], opened: Opened):
        self.table = table
        self.handles = handles  # Operations' open handles by fh
        self.new_fh = new_fh
        self.opened = opened

    def install(self) -> bool:
        """Offer the requests above to this handler from now on (False: this
        pyfuse3 cannot).  Before pyfuse3.main()."""
        if not AVAILABLE:
            return False
        pyfuse3.fastpath_set_sync_handler(self, tuple(NAMES))
        return True

    def __call__(self, opcode: int, nodeid: int, fh: int, offset: int, data: bytes | None,
                 uid: int, gid: int, pid: int) -> Answer:
        try:
            if opcode == FUSE_WRITE:
                handle = self.handles.get(fh)
                return None if handle is None or data is None else handle.write_now(offset, data)
            if opcode == FUSE_RELEASE:
                handle = self.handles.get(fh)
                if handle is None or not handle.releases_anywhere:
                    return None
                self.handles.pop(fh, None)
                return 0
            node = self.table.get(nodeid)
            if node is None:
                return None
            if opcode == FUSE_GETATTR:
                a = node.attributes_now()
                return None if a is None else _attr(a)
            if data is None or len(data) > NAME_MAX:  # (LOOKUP, CREATE)
                return None if data is None else -errno.ENAMETOOLONG
            if opcode == FUSE_LOOKUP:
                return -errno.ENOENT if node.absent_now(os.fsdecode(data)) else None
            if opcode == FUSE_CREATE:
                return self._create(node, os.fsdecode(data), offset, fh, uid, gid, pid)
            return None
        except Exception as e:  # (a node's error, as Operations would give it; a bug: logged, EIO)
            return -to_fuse_error(e, NAMES.get(opcode, str(opcode))).errno

    def _create(self, parent: Node, name: str, mode: int, flags: int, uid: int, gid: int, pid: int) -> Answer:
        """Operations.create, here: the new node is remembered, its handle kept and
        the open hooks run before the reply."""
        CALLER.set((uid, gid))
        made = parent.create_now(name, mode, flags)
        if made is None:
            return None
        node, handle = made
        fh = self.new_fh()
        self.handles[fh] = handle
        self.table.remember(node)
        self.opened(node, pid, flags)  # (lineage: a draft's writer, thread-safe; a wake of the loop cost 10 %)
        a = node.attributes()
        return (*_attr(a), int(a.entry_timeout * 1e9), fh,
                (FOPEN_DIRECT_IO if handle.direct_io else 0) | (FOPEN_KEEP_CACHE if handle.keep_cache else 0))


def _attr(a: pyfuse3.EntryAttributes) -> tuple[int, ...]:
    """The attributes as syncpath.c takes them: the stat fields, then attr_timeout in ns."""
    return (a.st_ino, a.st_mode, a.st_nlink, a.st_uid, a.st_gid, a.st_rdev, a.st_size, a.st_blksize,
            a.st_blocks, a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns, int(a.attr_timeout * 1e9))
