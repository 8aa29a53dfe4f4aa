"""The gate of one draft: many changes at once, or one commit (livedraft.py)."""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class Gate:
    """Many changes at once, or one commit; a commit waiting keeps new changes out.

    Changes enter from the trio loop (enter/leave: plain counters, as trio
    switches tasks only at awaits) or from any other thread (try_enter/
    leave_thread: a write answered in pyfuse3's reader thread, syncops.py),
    which never waits: while a commit waits or runs it is refused, and the
    request goes the trio way.  `_lock` orders the threads' counter against the
    commit's flags: once a commit counts itself as waiting, no thread enters."""

    def __init__(self) -> None:
        self._changes = 0
        self._threads = 0  # changes in flight in other threads
        self._committing = False
        self._waiting = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._lock = threading.Lock()
        self.token: trio.lowlevel.TrioToken | None = None  # to wake the loop from a thread

    async def enter(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        while self._committing or self._waiting:
            await self._lot.park()
        self._changes += 1

    def leave(self) -> None:
        self._changes -= 1
        if self._waiting and not self._changes:
            self._lot.unpark_all()

    def try_enter(self) -> bool:
        """From any thread: enter unless a commit waits or runs (then False)."""
        with self._lock:
            if self._committing or self._waiting or self.token is None:
                return False
            self._threads += 1
            return True

    def leave_thread(self) -> None:
        """From any thread, after try_enter(): a waiting commit re-checks on the loop."""
        with self._lock:
            self._threads -= 1
            wake = self._waiting and not self._threads
        if wake and self.token is not None:
            try:
                self.token.run_sync_soon(self._lot.unpark_all)
            except trio.RunFinishedError:
                pass  # the loop has ended: no commit waits on it

    @asynccontextmanager
    async def commit(self) -> AsyncIterator[None]:
        self.token = trio.lowlevel.current_trio_token()
        with self._lock:
            self._waiting += 1
        try:
            while self._committing or self._changes or self._threads:
                await self._lot.park()
            self._committing = True  # (still counted as waiting: no thread got in meanwhile)
        finally:
            with self._lock:
                self._waiting -= 1
            if not self._waiting:
                self._lot.unpark_all()  # (re-check: they park again behind us)
        try:
            yield
        finally:
            self._committing = False
            self._lot.unpark_all()
