"""Read-ahead across the files of one version folder (the policy; the fetching
is reader.ChunkReader's).

A reader that opens a folder's files in name order (cp -r, tar, rsync, a loader
over sorted shards) gets the next small files fetched in the background and put
in the kernel page cache, so their reads need no round trip through the daemon.
A reader that opens them in no order (a shuffled loader) gets all of the
folder's small files fetched behind it once SCATTERED_OPENS opens were out of
order (docs/mount-semantics.md, "Reading")."""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Protocol

from ..registry.manifest import Entry, FileEntry
from .reader import ChunkReader, ChunkRequest

SIBLING_READAHEAD = 32  # small files fetched ahead (into the page cache) of a reader opening a folder's files in order
SIBLING_BATCH = 8  # ... in batches of this many per worker-thread job (one thread hop per batch)
SIBLING_BYTES = 32 * 1024 * 1024  # ... and at most this many bytes ahead (as for a big file)
SCATTERED_OPENS = 4  # out-of-order opens in one folder before all its small files are fetched (a shuffled loader)
FOLDER_BYTES = 64 * 1024 * 1024  # ... if they hold at most this many bytes not fetched yet


class FedFile(Protocol):
    """A file node the kernel knows: its inode, and whether its bytes were
    already offered to the kernel's page cache."""

    ino: int
    fed: bool


class FolderReadAhead:
    """The sibling read-ahead of one folder whose entries are `tree`: `where(name)`
    names an entry in errors (collection:vN/path), `known(name)` is its file node
    if the kernel knows it (its pages can then be fed), else None."""

    def __init__(self, reader: ChunkReader, tree: dict[str, Entry], where: Callable[[str], str],
                 known: Callable[[str], FedFile | None]):
        self.reader = reader
        self._tree = tree
        self._where = where
        self._known = known
        self._names = sorted(tree)
        self._last_opened = -2
        self._ahead = 0  # names below this index have been fetched ahead
        self._scattered = 0  # out-of-order opens so far

    def opened(self, name: str) -> None:
        """The file `name` of this folder was opened (or first read, when the
        kernel sends no OPEN: files fed ahead are then read unseen, so a file
        up to the end of what was fetched ahead still continues the order)."""
        i = bisect.bisect_left(self._names, name)
        last, self._last_opened = self._last_opened, i
        sequential = i == last + 1 or 0 <= last < i <= self._ahead
        if not sequential:
            self._ahead = 0
            self._scattered += 1
            if self._scattered == SCATTERED_OPENS:
                self._fetch_folder()
            return
        window = self._window(i + 1)
        if self._ahead - (i + 1) > window - max(1, min(SIBLING_BATCH, window // 2)):
            return  # enough ahead: wait until a whole batch can be fetched
        start, self._ahead = max(i + 1, self._ahead), i + 1 + window
        batch = self._small_files(self._names[start:self._ahead])
        for b in range(0, len(batch), SIBLING_BATCH):
            self.reader.prefetch(batch[b:b + SIBLING_BATCH])

    def _fetch_folder(self) -> None:
        """A reader opens this folder's files in no order: it will want all of
        them, so fetch the small ones not fetched yet, in name order, one
        worker-thread job at a time (ChunkReader.fetch_behind), into the kernel
        page cache.  Only when they add up to at most FOLDER_BYTES."""
        batch = self._small_files(self._names, FOLDER_BYTES)
        if batch:
            self.reader.fetch_behind(batch)

    def _small_files(self, names: Sequence[str], budget: int = 0) -> list[ChunkRequest]:
        """The single-chunk files among `names` whose pages were not fed yet
        (inode 0 when the kernel does not know the file: its bytes then stay in
        the daemon's memory).  Marks them fed.  With a budget, nothing unless
        their sizes add up to at most that."""
        batch: list[tuple[FileEntry, str, FedFile | None]] = []
        for name in names:
            e = self._tree[name]
            if isinstance(e, FileEntry) and len(e.chunks) == 1:
                node = self._known(name)  # known to the kernel: feed its pages
                if node is not None and node.fed:
                    continue  # the kernel has (or had and reclaimed) its pages: a warm re-read
                batch.append((e, name, node))
        if budget and sum(e.size for e, _, _ in batch) > budget:
            return []
        out = []
        for e, name, node in batch:
            ino = 0
            if node is not None:
                node.fed, ino = True, node.ino
            out.append(ChunkRequest(e.chunks[0], e.size, self._where(name), ino))
        return out

    def _window(self, start: int) -> int:
        """How many names from `start` on to keep fetched ahead (fewer when big)."""
        total = 0
        for n, name in enumerate(self._names[start:start + SIBLING_READAHEAD]):
            e = self._tree[name]
            total += e.size if isinstance(e, FileEntry) else 0
            if total > SIBLING_BYTES:
                return max(1, n)
        return SIBLING_READAHEAD
