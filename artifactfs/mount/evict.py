"""The inode soft limit: keep the daemon's memory bounded by what is in use.

Every inode the kernel holds is a live node in the daemon (and a version
folder's node holds its loaded tree), so a `find` over a 1,000,000-file
version would keep 1,000,000 nodes until the kernel forgets them, which it
does only under memory pressure.  When more inodes than the soft limit are
live, the version folders used least recently are invalidated in the kernel
(FUSE notify_inval_entry): the kernel drops those dentries and their unused
sub-trees and sends FORGET, and the daemon frees the nodes and trees.  A
folder still in use (open, a cwd) keeps its inode; a later path lookup just
asks the daemon again.  The same idea as hf-mount's inode soft limit."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

import pyfuse3
import trio

from .inodes import InodeTable
from .threads import Threads

log = logging.getLogger("artifactfs.mount")
PERIOD = 0.2  # seconds between checks of the inode count
Invalidate = Callable[[int, bytes], None]


def _invalidate(parent: int, name: bytes) -> None:
    pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): give freed heap pages back to the system (a no-op elsewhere)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: fn(0)


class InodeLimit:
    """Keeps the number of live inodes near `limit` (0: no limit)."""

    def __init__(self, table: InodeTable, limit: int, threads: Threads, invalidate: Invalidate = _invalidate):
        self.table = table
        self.limit = limit
        self._threads = threads
        self._invalidate = invalidate
        self._trim = _malloc_trim()
        self.evicted = 0  # folders invalidated so far (stats)

    def step(self) -> int:
        """Invalidate the coldest folders when over the limit: a quarter of the
        tracked folders per step (at least one), as their sizes are unknown.
        Returns how many were invalidated."""
        if not self.limit or len(self.table) <= self.limit:
            return 0
        cold = self.table.coldest_folders(max(1, self.table.folders() // 4))
        for dentry in cold:
            self._invalidate(dentry.parent, os.fsencode(dentry.name))
        self.evicted += len(cold)
        return len(cold)

    async def run(self) -> None:
        """The service: check every PERIOD; after the kernel's FORGETs have freed a
        lot, hand the freed heap back to the system."""
        peak = 0
        while True:
            await trio.sleep(PERIOD)
            live = len(self.table)
            peak = max(peak, live)
            if self.step():
                continue
            if peak - live > max(10_000, peak // 2):  # a walk was forgotten (drop_caches, eviction)
                self.table.compact()
                await self._threads.run(self._trim)
                peak = live
