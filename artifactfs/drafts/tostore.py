"""Moving a staged file's bytes into the store at commit, reading them as little
as possible (issue 10).

A file whose digests were taken while it was written (chunks/digests.py) is not
hashed again.  Into a local store its chunks go without passing through this
process: a file of one chunk on the store's filesystem *becomes* its blob (a
hard link: the data file is copy-on-write from then on, filedata._open_own),
larger ones are copied by the kernel, chunk by chunk (LocalStore.put_file).
Other stores get the file read, hashed and uploaded as before (S3 multipart
from the data file is left to the S3 upload path).  Files without digests
are read, hashed and stored as `put` does (upload.upload_many)."""
from __future__ import annotations

from ..chunks import upload
from ..chunks.digests import Digests
from ..errors import StoreError
from ..registry.manifest import FileEntry
from ..registry.versions import Registry, blob_key
from ..store.local import LocalStore


def store_known(store: LocalStore, path: str, known: Digests) -> FileEntry:
    """Store the chunks of the file at `path`, whose digests are `known`; its entry."""
    entry = FileEntry(known.digest, known.size, known.chunks)
    try:
        for i, key in enumerate(known.chunks):
            offset, length = entry.chunk_span(i)
            store.put_file(blob_key(key), path, offset, length)
    except OSError as e:
        raise StoreError(f"cannot write to the store {store.url}: {e.strerror}") from None
    return entry


def store_staged(registry: Registry, paths: list[str], known: list[Digests | None]) -> list[FileEntry]:
    """Entries of staged files, their chunks stored: into a local store those with
    `known` digests without reading them; the others (and every file, for other
    stores) read, hashed and stored in parallel."""
    out: list[FileEntry | None] = [None] * len(paths)
    store = registry.store
    if isinstance(store, LocalStore):
        for i, k in enumerate(known):
            if k is not None:
                out[i] = store_known(store, paths[i], k)
    todo = [i for i, e in enumerate(out) if e is None]
    for i, e in zip(todo, upload.upload_many(registry, [paths[i] for i in todo])):
        out[i] = FileEntry(e.digest, e.size, e.chunks, pack=e.pack)  # content only: no mode or mtime
    return out  # type: ignore[return-value]
