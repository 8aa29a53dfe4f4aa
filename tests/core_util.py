"""Helpers for the core (registry/API) tests: sample trees and a recording store."""
from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator

import xxhash

from artifactfs.chunks.download import read_chunk
from artifactfs.registry.keys import blob_key, pack_object_key
from artifactfs.registry.manifest import FileEntry, walk
from artifactfs.registry.versions import Registry
from artifactfs.store import ObjectStore, open_store


def write_files(root: str, files: dict[str, bytes | str]) -> str:
    """Create files (relative path -> content) below root; returns root."""
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    return root


class RecordingStore(ObjectStore):
    """The real store at `url` (local or S3), recording each operation as (op, key)."""

    def __init__(self, url: str):
        self.inner = open_store(url)
        self.url = self.inner.url
        self.ops: list[tuple[str, str]] = []

    def get(self, key: str) -> bytes:
        self.ops.append(("get", key))
        return self.inner.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.ops.append(("get_range", key))
        return self.inner.get_range(key, start, length)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        self.ops.append(("get_versioned", key))
        return self.inner.get_versioned(key)

    def put(self, key: str, data: bytes) -> None:
        self.ops.append(("put", key))
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.ops.append(("put_if_absent", key))
        return self.inner.put_if_absent(key, data)

    def compare_and_swap(self, key: str, data: bytes, etag: str | None) -> str:
        self.ops.append(("cas", key))
        return self.inner.compare_and_swap(key, data, etag)

    def sync(self) -> None:
        self.ops.append(("sync", ""))
        self.inner.sync()

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def present(self, keys: Iterable[str]) -> set[str]:
        return self.inner.present(keys)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        return self.inner.list(prefix, recursive)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    def count(self, op: str, prefix: str) -> int:
        return sum(1 for o, k in self.ops if o == op and k.startswith(prefix))


def check_version_complete(reg: Registry, project: str, name: str, n: int) -> int:
    """Load version n fully: every tree verifies (Registry.load checks digests) and
    every blob (or pack span) exists with the bytes its key names.  Returns the file count."""
    info = reg.version(project, name, n)
    count = total = 0
    for path, entry in walk(reg, info.root):
        count, total = count + 1, total + entry.size
        h = xxhash.xxh3_128()
        for i, key in enumerate(entry.chunks):
            data = read_chunk(reg, entry, i, path)  # from its blob or its pack, verified
            assert xxhash.xxh3_128_hexdigest(data) == key
            h.update(data)
        assert h.digest() == base64.b64decode(entry.digest)
    assert (count, total) == (info.file_count, info.size)
    return count


def synthetic_entry(i: int) -> FileEntry:
    """A file entry without a blob behind it, for format-scale tests."""
    raw = xxhash.xxh3_128_digest(str(i).encode())
    return FileEntry(base64.b64encode(raw).decode(), 10, (raw.hex(),))


def corrupt(store: ObjectStore, entry: FileEntry, data: bytes) -> None:
    """Make the stored bytes of a one-chunk file `data` (of the same length), in its
    blob or in its pack (store-format.md 5.6), and wait until that is stored."""
    if entry.pack is None:
        store.put(blob_key(entry.chunks[0]), data)
    else:
        key = pack_object_key(entry.pack.pack)
        packed = bytearray(store.get(key))
        packed[entry.pack.at:entry.pack.at + len(data)] = data
        store.put(key, bytes(packed))
    store.sync()
