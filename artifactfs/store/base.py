"""The small object-store interface the registry is written against.

Keys are '/'-separated relative strings.  Semantics every backend provides:
- put() may buffer; sync() is the barrier after which every earlier put is durable.
- put_if_absent() and compare_and_swap() are atomic and durable when they return.
- get_versioned() returns an etag that compare_and_swap() accepts.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectStat:
    key: str
    size: int     # bytes
    mtime: float  # seconds since the epoch (last write)


class ObjectStore(abc.ABC):
    url: str
    pack_below = 0  # bytes: a multi-file upload packs files smaller than this (chunks/packs.py); 0: never

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Whole object; raises ObjectNotFound."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of the object (shorter at its end)."""

    @abc.abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Whole object and its etag, read consistently."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Create or replace; durable only after sync()."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create atomically and durably; False when the key already exists."""

    @abc.abstractmethod
    def compare_and_swap(self, key: str, data: bytes, etag: str | None) -> str:
        """Replace the object only if its etag is still `etag` (None: only if absent).
        Returns the new etag; raises PreconditionFailed when someone else won."""

    def put_visible(self, key: str, data: bytes) -> None:
        """Create a key no one else writes (a unique name) so that every reader sees it
        once this returns; durability is not needed (gc's in-flight markers)."""
        self.put_if_absent(key, data)

    def put_new(self, key: str, data: bytes) -> bool:
        """put() of content-addressed `data` (the same key always holds the same
        bytes) unless the key is present; True if it was (maybe again) written."""
        if self.exists(key):
            return False
        self.put(key, data)
        return True

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    def present(self, keys: Iterable[str]) -> set[str]:
        """The subset of `keys` that exist; a store may answer many at once."""
        return {k for k in keys if self.exists(k)}

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; raises ObjectNotFound."""

    @abc.abstractmethod
    def list(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        """Keys starting with `prefix`.  With recursive=False, only the next level:
        keys directly below and sub-prefixes (ending in '/')."""

    def list_stat(self, prefix: str) -> Iterator[ObjectStat]:
        """Every key below `prefix` with its size and modification time (for gc)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list modification times")

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the key; absent keys are fine."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make every earlier put() durable."""

    def prefetch(self, keys: list[str]) -> None:
        """A hint: these keys will be read soon (a store may start fetching them)."""

    def local_path(self, key: str) -> str | None:
        """A filesystem path holding the object, for in-place reads; None if remote."""
        return None

    def set_aside(self, key: str, damaged: Callable[[bytes], bool]) -> str | None:
        """Move object `key` out of the way if `damaged(its bytes)` still holds, to
        a key nobody reads, so the key can be written again; that key, or None
        when it was not moved (not damaged, gone, or a store that cannot do it
        safely: only the local store does)."""
        return None

    def remove_temporaries(self, older_than: float) -> int:
        """Remove what writers killed mid-write left behind, last changed more than
        `older_than` seconds ago; how many were removed.  A store that writes each
        object whole (S3) leaves nothing."""
        return 0
