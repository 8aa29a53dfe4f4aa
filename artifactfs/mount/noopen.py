"""Files served without OPEN requests (the kernel's `no_open`), where pyfuse3 allows it.

Linux stops sending OPEN and RELEASE to a FUSE mount once the filesystem answers
one OPEN with ENOSYS; from then on it keeps every file's page cache across
opens (FOPEN_KEEP_CACHE) and sends READ, WRITE and FSYNC without a file handle
(fh 0).  A warm `open() + read() + close()` from Python then costs one request
to the daemon instead of three: the IOCTL of `isatty()`, which the patched
pyfuse3 answers (ENOTTY) in its native reader threads, without Python or the
trio loop (third_party/pyfuse3: fastpath.c; threads.py counts them).

Stock pyfuse3 (3.5) passes those handlers only the file handle, so the mount
could not tell which file a handle-less READ is for.  The pyfuse3 that
`make setup` and `make install` build (third_party/pyfuse3) passes the inode
number as `fh` when the kernel sends none, and says so with
`pyfuse3.NO_OPEN_INODE_FH`.  Without it the mount answers OPEN as before
(`AVAILABLE` is False): a `pip install`ed artifactfs works, with more requests
per open.

Handles made by open/create are numbered from HANDLE_BASE up, and inode
numbers are below 2**63 (inodes.ino_of), so a request's `fh` says which it is."""
from __future__ import annotations

import os
from collections import OrderedDict

import pyfuse3

from .handles import Handle
from .inodes import InodeTable

AVAILABLE = bool(getattr(pyfuse3, "NO_OPEN_INODE_FH", False))
HANDLE_BASE = 1 << 63  # the first handle open/create gives out: never an inode number
KEPT_READERS = 64  # per-inode read handles kept (each may hold one chunk of up to 8 MiB in hand)


class InodeHandles:
    """Handles for requests that name an inode instead of a handle.

    Reads of files whose bytes never change (handles with keep_cache: version
    files) keep one handle per inode, for its read-ahead state, the most
    recently used KEPT_READERS of them; other files (drafts) get a fresh
    handle per request, as their handles hold no state.  A handle is made by
    the node's own open(), so its checks apply: a write to a version file is
    EROFS, as an open for writing would have been."""

    def __init__(self, table: InodeTable, limit: int = KEPT_READERS):
        self.table = table
        self.limit = limit
        self._readers: OrderedDict[int, Handle] = OrderedDict()

    async def reader(self, ino: int) -> Handle:
        """A handle to read (or fsync) inode `ino`; ESTALE if the kernel forgot it."""
        handle = self._readers.get(ino)
        if handle is not None:
            self._readers.move_to_end(ino)
            return handle
        handle = await self.table[ino].open(os.O_RDONLY)
        if handle.keep_cache:
            self._readers[ino] = handle
            if len(self._readers) > self.limit:
                self._readers.popitem(last=False)
        return handle

    async def writer(self, ino: int) -> Handle:
        """A handle to write inode `ino` (the node refuses if it is read-only)."""
        return await self.table[ino].open(os.O_RDWR)

    def forget(self, ino: int) -> None:
        """The kernel forgot `ino`: a later node with that number gets a new handle."""
        self._readers.pop(ino, None)


def describe(no_open: bool, asked_for_opens: bool) -> str:
    """One log line: how this mount serves opens, and why."""
    if no_open:
        return "files are served without OPEN requests (pyfuse3 built with third_party/pyfuse3)"
    if asked_for_opens:
        return "every open and close reaches the daemon (--send-opens)"
    return ("every open and close reaches the daemon: this pyfuse3 cannot serve files without them "
            "(`make setup` / `make install` build one that can: third_party/pyfuse3)")
