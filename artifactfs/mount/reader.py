"""Reading file contents through the mount: an in-memory LRU of verified chunks
on top of the shared on-disk ChunkCache, and per-open-file read-ahead.

The hot path (FileReader.read of a chunk already in hand) is a bounds check and
a memoryview slice: no lock, no thread hop, no copy.  A chunk not in memory is
fetched once in a worker thread however many readers wait for it; a reader
that has gone sequential for READAHEAD_TRIGGER bytes gets the next chunks
fetched in the background so it rarely waits for a round trip.  Small files
fetched ahead (a folder read in name order) also go into the kernel's page
cache (pagecache.PageFeeder), so the reader finds them there without a READ."""
from __future__ import annotations

import errno
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from ..chunks.cache import ChunkCache
from ..registry.manifest import CHUNK_SIZE, FileEntry
from .handles import Handle
from .pagecache import PageFeeder
from .threads import Threads

log = logging.getLogger("artifactfs.mount")

READAHEAD_CHUNKS = 4
READAHEAD_TRIGGER = 1024 * 1024
SEQ_TOLERANCE = 4 * 1024 * 1024  # the kernel's concurrent readahead requests arrive slightly out of order
BEHIND_BATCH = 8  # blobs per worker-thread job of fetch_behind
BEHIND_QUEUE = 65536  # blobs queued for fetch_behind at most; more are not fetched ahead
# fetch_behind's bytes over the mount's life: a quarter of the RAM, so a dataset far bigger than the page
# cache is not read twice (fetched pages evicted before the loader gets to them)
BEHIND_BUDGET = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """One blob to read: its key (the xxh3-128 of its bytes), its length in bytes,
    `where` it is read for (collection:vN/path, named in errors), and the inode of
    the file it is the whole content of, whose page cache then gets the bytes (0: none)."""

    key: str
    length: int
    where: str
    inode: int = 0


class _Fetch:
    """A chunk being fetched: waiters park on `done`."""

    __slots__ = ("done", "data", "error", "inodes")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None
        self.inodes: list[int] = []  # whose page cache gets the bytes


class ChunkReader:
    """Chunks by blob key, shared by every open file of the mount."""

    def __init__(self, cache: ChunkCache, memory_bytes: int, threads: Threads, feeder: PageFeeder | None = None):
        self.cache = cache
        self.feeder = feeder
        self.memory_bytes = memory_bytes
        # read-ahead must not evict the chunk being read before it is used
        self.readahead = max(0, min(READAHEAD_CHUNKS, memory_bytes // CHUNK_SIZE - 1))
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._mem_size = 0
        self._inflight: dict[str, _Fetch] = {}
        self._threads = threads
        self.nursery: trio.Nursery | None = None  # for read-ahead; set while serving
        self._behind: deque[ChunkRequest] = deque()  # fetch_behind's queue
        self._behind_running = False
        self._behind_left = BEHIND_BUDGET
        self.counters = {"opens": 0, "reads": 0, "read_bytes": 0, "chunk_reads": 0, "memory_hits": 0, "waits": 0, "readahead": 0, "fetch_errors": 0}

    def stats(self) -> dict[str, int]:
        fed = self.feeder.counters if self.feeder is not None else {}
        return {**self.counters, **fed, "memory_bytes": self._mem_size, "memory_chunks": len(self._mem)}

    async def chunk(self, key: str, length: int, where: str) -> bytes:
        """The verified bytes of blob `key`; DigestMismatchError and store errors propagate."""
        self.counters["chunk_reads"] += 1
        data = self._mem.get(key)
        if data is not None:
            self._mem.move_to_end(key)
            self.counters["memory_hits"] += 1
            return data
        fetch = self._inflight.get(key)
        if fetch is None:
            fetch = self._start(key)
            await self._fetch([ChunkRequest(key, length, where)], [fetch])
        else:
            self.counters["waits"] += 1
            await fetch.done.wait()
        if fetch.error is not None:
            raise fetch.error
        assert fetch.data is not None
        return fetch.data

    def prefetch(self, items: Sequence[ChunkRequest]) -> None:
        """Fetch blobs in the background, in one worker thread, unless in memory or
        already on their way.  A blob with a non-zero inode (a whole file) also goes
        into that file's page cache."""
        todo, fetches = self._claim(items)
        if todo:
            assert self.nursery is not None
            self.nursery.start_soon(self._fetch, todo, fetches)

    def fetch_behind(self, items: Sequence[ChunkRequest]) -> None:
        """Like prefetch, but queued and fetched by one task, BEHIND_BATCH blobs per
        worker-thread job, so a long list never keeps more than one thread from the
        reads that programs wait for (and a blob is claimed only when its batch
        starts: a program that wants it sooner fetches it itself)."""
        size = sum(item.length for item in items)
        if self.nursery is None or len(self._behind) + len(items) > BEHIND_QUEUE or size > self._behind_left:
            return
        self._behind_left -= size
        self._behind.extend(items)
        if not self._behind_running:
            self._behind_running = True
            self.nursery.start_soon(self._run_behind)

    async def _run_behind(self) -> None:
        try:
            while self._behind:
                batch = [self._behind.popleft() for _ in range(min(BEHIND_BATCH, len(self._behind)))]
                todo, fetches = self._claim(batch, feed_others=False)
                if todo:
                    await self._fetch(todo, fetches)
        finally:
            self._behind_running = False

    def _claim(self, items: Sequence[ChunkRequest], feed_others: bool = True) -> tuple[list[ChunkRequest], list[_Fetch]]:
        """The blobs of `items` to fetch now (registered as on their way); those in
        memory go to the page cache at once, those on their way get the inode added.
        Without `feed_others` (fetch_behind, claiming long after it queued), blobs in
        memory or on their way are left alone: a program's READ fetched them, so the
        kernel has (or is getting) those pages already, and storing them again
        would copy every such file twice."""
        todo: list[ChunkRequest] = []
        fetches: list[_Fetch] = []
        feeds: list[tuple[int, bytes]] = []
        for item in items:
            data = self._mem.get(item.key)
            if data is not None:
                if item.inode and feed_others:
                    feeds.append((item.inode, data))
                continue
            fetch = self._inflight.get(item.key)
            if fetch is None and self.nursery is not None:
                fetch = self._start(item.key)
                todo.append(item)
                fetches.append(fetch)
            elif fetch is not None and not feed_others:
                continue
            if fetch is not None and item.inode:
                fetch.inodes.append(item.inode)
        self.counters["readahead"] += len(todo)
        self._feed(feeds)
        return todo, fetches

    def _feed(self, feeds: list[tuple[int, bytes]]) -> None:
        """(inode, whole content) pairs for the page cache, handed over in one go."""
        if feeds and self.feeder is not None:
            self.feeder.offer(feeds)

    def _start(self, key: str) -> _Fetch:
        fetch = _Fetch()
        self._inflight[key] = fetch
        return fetch

    async def _fetch(self, items: list[ChunkRequest], fetches: list[_Fetch]) -> None:
        """Fetch blobs in one worker thread (one thread hop for a batch); each
        result or error is delivered to that blob's waiters."""
        results: list[bytes | BaseException] = []
        try:
            results = await self._threads.run(self._read_all, items)
        except BaseException:  # cancelled at shutdown: no waiter is left parked
            results = [OSError(errno.EIO, "fetch interrupted by unmount")] * len(items)
            raise
        finally:
            feeds: list[tuple[int, bytes]] = []
            for item, fetch, result in zip(items, fetches, results):
                self._settle(item.key, fetch, result)
                if fetch.data is not None:
                    feeds += [(ino, fetch.data) for ino in fetch.inodes]
            self._feed(feeds)

    def _read_all(self, items: list[ChunkRequest]) -> list[bytes | BaseException]:
        """Blocking: each blob's bytes, or the error reading it."""
        out: list[bytes | BaseException] = []
        if len(items) > 1:
            self.cache.prefetch([item.key for item in items])  # a remote store fetches them in parallel
        for item in items:
            try:
                out.append(self.cache.read_chunk(item.key, item.length, item.where))
            except Exception as e:
                out.append(e)
        return out

    def _settle(self, key: str, fetch: _Fetch, result: bytes | BaseException) -> None:
        del self._inflight[key]
        if isinstance(result, BaseException):  # not cached, so a later read retries
            self.counters["fetch_errors"] += 1
            fetch.error = result
        else:
            fetch.data = result
            self._remember(key, result)
        fetch.done.set()

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self.memory_bytes:
            return
        self._mem[key] = data
        self._mem_size += len(data)
        while self._mem_size > self.memory_bytes:
            _, old = self._mem.popitem(last=False)
            self._mem_size -= len(old)


class FileReader(Handle):
    """An open file of a version: keeps the chunk in hand and detects sequential
    access.  Contents never change, so the kernel may keep its page cache."""

    keep_cache = immutable = True

    def __init__(self, reader: ChunkReader, entry: FileEntry, where: str):
        self.reader = reader
        self.entry = entry
        self.where = where
        self._index = -1
        self._view = memoryview(b"")
        self._next = 0      # where a sequential reader reads next
        self._streak = 0    # bytes read sequentially so far
        self._ahead = 0     # chunks below this index have been prefetched

    async def read(self, off: int, size: int) -> bytes | memoryview:
        end = min(off + size, self.entry.size)
        if off >= end:
            return b""
        counters = self.reader.counters
        counters["reads"] += 1
        counters["read_bytes"] += end - off
        index = off // CHUNK_SIZE
        base = index * CHUNK_SIZE
        if abs(off - self._next) <= SEQ_TOLERANCE:
            self._streak += end - off
            if self._streak >= READAHEAD_TRIGGER and self._ahead <= index + self.reader.readahead:
                self._read_ahead(index)
        else:
            self._streak = 0
        self._next = end
        if end - base <= CHUNK_SIZE:
            if index != self._index:
                self._view = memoryview(await self._chunk(index))
                self._index = index
            return self._view[off - base:end - base]
        return await self._span(off, end)

    async def _chunk(self, index: int) -> bytes:
        _, length = self.entry.chunk_span(index)
        return await self.reader.chunk(self.entry.chunks[index], length, self.where)

    async def _span(self, off: int, end: int) -> bytes:
        """A read that crosses chunk boundaries (only unaligned readers do this)."""
        parts = []
        pos = off
        while pos < end:
            index = pos // CHUNK_SIZE
            base = index * CHUNK_SIZE
            data = await self._chunk(index)
            stop = min(end, base + len(data))
            parts.append(data[pos - base:stop - base])
            pos = stop
        return b"".join(parts)

    def _read_ahead(self, index: int) -> None:
        last = min(index + self.reader.readahead, len(self.entry.chunks) - 1)
        for i in range(max(self._ahead, index + 1), last + 1):
            _, length = self.entry.chunk_span(i)
            self.reader.prefetch([ChunkRequest(self.entry.chunks[i], length, self.where)])
        self._ahead = max(self._ahead, last + 1)
