"""Moving a staged file's bytes into the store at commit, reading them as little
as possible (issue 10).

A file whose digests were taken while it was written (chunks/digests.py) is not
hashed again.  Into a local store its chunks go without passing through this
process: a file of one chunk on the store's filesystem *becomes* its blob (a
hard link: the data file is copy-on-write from then on, datafiles.open_own),
and so does each chunk of a big file kept as one file per chunk
(datafiles.py); other chunks are copied by the kernel (LocalStore.put_file).
While a big file is still being written in order, each complete chunk can go
to a local store at once (store_ahead), so that the commit finds it there and
sync waits for little more than the disk.  Other stores get the file read,
hashed and uploaded as before (S3 multipart from the data file is left to the
S3 upload path).  Files without digests are read, hashed and stored as `put`
does (upload.upload_many)."""
from __future__ import annotations

import os

from ..chunks import upload
from ..chunks.digests import Digests, RunningDigest
from ..errors import StoreError
from ..registry.manifest import CHUNK_SIZE, FileEntry
from ..registry.versions import Registry, blob_key
from ..store.base import ObjectStore
from ..store.local import LocalStore, start_writeback
from .datafiles import Piece, chunk_path
from .engine import Draft
from .inode import Inode


def store_known(store: LocalStore, where: list[Piece], known: Digests) -> FileEntry:
    """Store the chunks of a file, whose digests are `known`, from `where` they are
    (datafiles.pieces); its entry."""
    entry = FileEntry(known.digest, known.size, known.chunks)
    try:
        for key, piece in zip(known.chunks, where, strict=True):
            store.put_file(blob_key(key), piece.path, piece.offset, piece.length)
    except OSError as e:
        raise StoreError(f"cannot write to the store {store.url}: {e.strerror}") from None
    return entry


def store_staged(registry: Registry | None, paths: list[str], where: list[list[Piece]],
                 known: list[Digests | None]) -> list[FileEntry]:
    """Entries of staged files, their chunks stored: into a local store those with
    `known` digests without reading them, from `where` their chunks are; the
    others (one data file each at `paths`; every file, for other stores) read,
    hashed and stored in parallel.  Without a registry nothing is stored: the
    entries only (`artifactfs status`)."""
    out: list[FileEntry | None] = [None] * len(paths)
    store = registry.store if registry is not None else None
    for i, k in enumerate(known):
        if k is not None and isinstance(store, LocalStore):
            out[i] = store_known(store, where[i], k)
        elif k is not None and store is None:
            out[i] = FileEntry(k.digest, k.size, k.chunks)
    todo = [i for i, e in enumerate(out) if e is None]
    for i, e in zip(todo, upload.upload_many(registry, [paths[i] for i in todo])):
        out[i] = FileEntry(e.digest, e.size, e.chunks, pack=e.pack)  # content only: no mode or mtime
    return out  # type: ignore[return-value]


def stores_ahead(store: ObjectStore) -> bool:
    """Whether store_ahead() does anything for this store (a local one)."""
    return isinstance(store, LocalStore)


def seals_chunks(store: ObjectStore, data_dir: str) -> bool:
    """Whether big files written in order should be kept one file per chunk
    (datafiles.py): a local store on the filesystem of the draft's data/."""
    return isinstance(store, LocalStore) and os.stat(store.root).st_dev == os.stat(data_dir).st_dev


def store_ahead(store: ObjectStore, draft: Draft, ino: Inode, running: RunningDigest, index: int) -> bool:
    """Store chunk `index` (CHUNK_SIZE bytes) of a staged file being written in order
    into a local store before any commit, under the key `running` took for it, and
    start its writeback; True if it was stored.  Nothing happens when the file no
    longer follows `running` (a write out of order, a truncate), or the chunk is in
    the store already.  A sealed chunk (datafiles.py) becomes the blob by link(2),
    under the inode's lock, as no seal or join may change which bytes its file
    holds meanwhile.  Other chunks' bytes are copied without the inode's lock and
    checked afterwards under it: any write over bytes `running` had taken ends
    `running` (filedata.write), so `running` still being the inode's digest proves
    the copy holds the bytes the key was taken of.  A chunk no commit ends up
    using is an unreferenced blob, which gc removes after its grace period."""
    if not isinstance(store, LocalStore):
        return False
    with ino.lock:
        if ino.running is not running or index >= len(running.keys):
            return False
        key = blob_key(running.keys[index])
        sealed = index < ino.sealed
        if sealed:
            path = chunk_path(draft.data_path(ino), index)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            try:
                stored = store.put_file(key, path, 0, CHUNK_SIZE)
            except BaseException:
                os.close(fd)
                raise
    if sealed:
        try:
            start_writeback(fd)  # (not under the lock: it may wait for the disk's queue)
        finally:
            os.close(fd)
        return stored
    if store.exists(key):
        return False
    try:
        fd = os.open(draft.data_path(ino), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # given back after a commit
    try:
        incoming = store.copy_in(fd, index * CHUNK_SIZE, CHUNK_SIZE)
    finally:
        os.close(fd)
    if incoming is None:
        return False
    with ino.lock:
        same = ino.running is running and incoming.size == CHUNK_SIZE
    if not same:
        store.discard(incoming)
        return False
    store.name_as(incoming, key)
    return True
