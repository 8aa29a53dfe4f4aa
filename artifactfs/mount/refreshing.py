"""A value read from the store, re-read once older than a given age: how
folders show collections, versions and aliases changed elsewhere without a
remount, and keep showing what was last seen while the store is unreachable."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

from ..errors import ArtifactfsError
from .threads import Threads

log = logging.getLogger("artifactfs.mount")
T = TypeVar("T")


class Refreshing(Generic[T]):
    """A value fetched in a worker thread, re-fetched once older than max_age
    seconds; concurrent callers share one fetch.  While the store is unreachable
    the last value is served (and the failure logged) rather than failing every
    listing; with no value yet, the error propagates."""

    def __init__(self, fetch: Callable[..., T], threads: Threads):
        self._fetch = fetch
        self._threads = threads
        self._value: T | None = None
        self._at = 0.0
        self._lock = trio.Lock()

    def _stale(self, max_age: float) -> bool:
        return self._value is None or time.monotonic() - self._at > max_age

    async def get(self, max_age: float, *args: object) -> T:
        """The value, re-fetched as fetch(*args) when stale."""
        if self._stale(max_age):
            async with self._lock:
                if self._stale(max_age):
                    started = time.monotonic()
                    try:
                        self._value = await self._threads.run(self._fetch, *args)
                    except (ArtifactfsError, OSError) as e:
                        if self._value is None:
                            raise
                        log.warning("refresh failed, showing what was last seen: %s", e)
                    self._at = started
        assert self._value is not None
        return self._value
