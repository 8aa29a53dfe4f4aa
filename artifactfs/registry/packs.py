"""Where a packed file's bytes are (docs/store-format.md 5.6): PackSpan, the
`pack`/`at` members of a tree entry, and an index from blob key to spans.

Small files uploaded to an object store are packed into shared objects
(chunks/packs.py writes and reads them).  Readers that hold the entry read its
span directly; readers that only have a blob key (the mount's chunk cache) ask
`locate()`, a process-wide index from blob key to the spans of the entries
alive in this process: a span is registered when its entry is made (a tree is
parsed, a draft's record is read) and forgotten when the last entry holding it
is garbage-collected, so the index never holds more than the entries in use."""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PackSpan:
    """Where a packed file's bytes are: pack name (32 hex) and byte offset in it;
    the length is the file's size."""

    pack: str
    at: int


class _Index:
    """blob key -> spans of live entries holding that content (weak references)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # weakref callbacks may run inside a locked section
        self._spans: dict[str, list[weakref.ref[PackSpan]]] = {}

    def add(self, key: str, span: PackSpan) -> None:
        with self._lock:
            refs = self._spans.setdefault(key, [])
            if any(r() is span for r in refs):
                return
            refs.append(weakref.ref(span, self._forget(key)))

    def _forget(self, key: str) -> Callable[[weakref.ref[PackSpan]], None]:
        def drop(ref: weakref.ref[PackSpan]) -> None:
            with self._lock:
                refs = self._spans.get(key)
                if refs is None:
                    return
                refs[:] = [r for r in refs if r is not ref]
                if not refs:
                    del self._spans[key]
        return drop

    def spans(self, key: str) -> list[PackSpan]:
        with self._lock:
            return [s for s in (r() for r in self._spans.get(key, ())) if s is not None]

    def __len__(self) -> int:
        with self._lock:
            return len(self._spans)


_index = _Index()
remember = _index.add
locate = _index.spans
located_keys = _index.__len__
