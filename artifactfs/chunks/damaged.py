"""Checking a blob read from the store against its key; a damaged one is set
aside where the store can (store/aside.py), so that putting the right bytes
again repairs it."""
from __future__ import annotations

import logging

import xxhash

from ..errors import DigestMismatchError
from ..registry.keys import blob_key
from ..store.base import ObjectStore

log = logging.getLogger("artifactfs")


def damaged_blob(store: ObjectStore, key: str, length: int, where: str) -> DigestMismatchError:
    """DigestMismatchError naming `where` (the file read) and the blob; a local
    store moves the blob aside first if it is still damaged (length: bytes)."""
    def bad(data: bytes) -> bool:
        return len(data) != length or xxhash.xxh3_128_hexdigest(data) != key
    text = f"{where}: stored data does not match its digest (blob {key})"
    aside = store.set_aside(blob_key(key), bad)
    if aside is not None:
        log.error("blob %s of %s is damaged: moved aside to %s; putting its right bytes again repairs it",
                  key, store.url, aside)
        text += f"; moved aside to {aside}: put the right bytes again to repair it"
    return DigestMismatchError(text)


def check_stored(store: ObjectStore, data: bytes | memoryview, key: str, length: int, where: str) -> None:
    """Raise damaged_blob unless `data`, read from the store, is blob `key` of `length` bytes."""
    if len(data) != length or xxhash.xxh3_128_hexdigest(data) != key:
        raise damaged_blob(store, key, length, where)
