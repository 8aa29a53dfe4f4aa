"""Small files fetched ahead, stored straight into the kernel page cache
(FUSE notify_store).

A reader that opens a folder's files in name order will read the next ones the
daemon fetches ahead.  Storing their verified bytes into the page cache of each
file's inode lets the kernel serve the read without sending a READ request: one
round trip through the daemon saved per file, a good part of the cost of small
files.  Only immutable version files are fed (their bytes never change, and
they are opened with keep_cache, so the kernel keeps the pages across opens).
(Feeding a big file's read-ahead chunks the same way was measured and did not
pay: the reader overtakes the stores and most bytes are copied twice.)

The stores run in one dedicated thread: notify_store waits for pages that an
in-flight READ holds locked, and only the event loop can answer that READ, so
the stores must never occupy the worker threads the event loop waits on.
(Profilers: `py-spy record` must run with --nonblocking here; stopping the
process while a store waits on a page lock can hang both.)"""
from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Callable

import pyfuse3

log = logging.getLogger("artifactfs.mount")
MAX_PENDING = 64 * 1024 * 1024  # bytes queued for the kernel; offers beyond are dropped
Store = Callable[[int, int, bytes], None]


class PageFeeder:
    """Queues (inode, bytes) pairs and stores them into the kernel page cache."""

    def __init__(self, store: Store = pyfuse3.notify_store, max_pending: int = MAX_PENDING):
        self._store = store
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[list[tuple[int, bytes]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self.enabled = True
        self.counters = {"pages_fed": 0, "pages_fed_bytes": 0, "pages_dropped": 0}

    def offer(self, files: list[tuple[int, bytes]]) -> None:
        """Store each file's whole content into its inode's page cache soon (best
        effort, never blocks; one hand-over, so one thread wake-up, per batch)."""
        if not self.enabled:
            return
        taken = []
        with self._lock:
            for ino, data in files:
                if self._pending + len(data) > self._max_pending:
                    self.counters["pages_dropped"] += 1
                    continue
                self._pending += len(data)
                taken.append((ino, data))
        if not taken:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="artifactfs-pages", daemon=True)
            self._thread.start()
        self._queue.put(taken)

    def _run(self) -> None:
        while (files := self._queue.get()) is not None:
            for ino, data in files:
                self._store_one(ino, data)

    def _store_one(self, ino: int, data: bytes) -> None:
        try:
            if self.enabled and data:
                self._store(ino, 0, data)
                self.counters["pages_fed"] += 1
                self.counters["pages_fed_bytes"] += len(data)
        except OSError as e:  # ENOENT: the kernel forgot the inode meanwhile; harmless
            if e.errno == errno.ENOSYS:
                log.info("kernel cannot take pages from the daemon; read-ahead stays in memory")
                self.enabled = False
            elif e.errno != errno.ENOENT:
                log.debug("page store for inode %d failed: %s", ino, e)
        finally:
            with self._lock:
                self._pending -= len(data)

    def close(self, timeout: float = 1.0) -> None:
        """Stop storing (pending offers are dropped) before the FUSE session goes away."""
        self.enabled = False
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("page store still waiting for the kernel at unmount")
