"""Hash-and-upload: local files into content-addressed chunks in the store.

Speed (bench/bench_put_get.py, docs/benchmarks.md): worker threads read into
reused CHUNK_SIZE buffers; each file is read once for hashing and storing, a
large one with the next chunk read by a helper thread meanwhile; small files go
to workers in batches; an unchanged file is recognised by its stat through the
HashCache instead of being read again.  Entries carry each file's mtime
(store-format.md 3.5): put records st_mtime_ns.  An OSError on the user's side
is one LocalFileError naming the local path."""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import xxhash

from ..errors import LocalFileError, StoreError
from ..registry.manifest import CHUNK_SIZE, MTIME_KEY, FileEntry, b64_digest
from ..registry.packs import PackSpan
from ..registry.versions import Registry, blob_key
from ..store.local import Incoming, LocalStore
from . import packs
from .buffers import WORKERS, Progress, chunk_buffer, read_full
from .digests import Digests, finish
from .hashcache import HashCache, Remembered

UPLOAD_BATCH = 64         # files per upload task
LOOKUP_BATCH = 500        # files per digest-cache query
COPIERS = 2               # chunks of one big file copied at once into a local store

def _put_blob(registry: Registry, key: str, view: memoryview) -> None:
    """Store a chunk unless present.  A local store writes straight from our
    buffer; other stores get bytes they may keep.  A failed write (a full disk)
    is the store's error, not the source file's."""
    data = view if registry.store.local_path(blob_key(key)) is not None else bytes(view)
    try:
        registry.put_blob(key, data)
    except OSError as e:
        raise StoreError(f"cannot write to the store {registry.store.url}: {e.strerror}") from None


def hash_fd(registry: Registry | None, fd: int, progress: Progress | None) -> Digests:
    """Read fd once: W&B digest, size and chunk keys; store each chunk unless present."""
    buf = chunk_buffer()
    n = read_full(fd, buf)
    if n < CHUNK_SIZE:  # the whole file in one read: its digest is its blob key
        raw = xxhash.xxh3_128_digest(buf[:n])
        if registry is not None and n:
            _put_blob(registry, raw.hex(), buf[:n])
        if progress:
            progress(n)
        return Digests(b64_digest(raw), n, (raw.hex(),) if n else ())
    whole = xxhash.xxh3_128()
    keys: list[str] = []
    size = 0
    for view in _overlapped_chunks(fd, n):
        whole.update(view)
        keys.append(xxhash.xxh3_128_hexdigest(view))
        size += len(view)
        if registry is not None:
            _put_blob(registry, keys[-1], view)
        if progress:
            progress(len(view))
    return finish(whole, size, keys)


def _overlapped_chunks(fd: int, first: int) -> Iterator[memoryview]:
    """The chunks of fd, the first already read (`first` bytes) into buffer 0.
    While the caller hashes and writes one chunk, a helper thread reads the next
    into the other buffer, so reading overlaps the work on two cores."""
    cur, n = 0, first
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger kernel read-ahead window
    with ThreadPoolExecutor(1) as reader:
        while n:
            ahead = None
            if n == CHUNK_SIZE:
                ahead = reader.submit(read_full, fd, chunk_buffer(1 - cur))
            try:
                yield chunk_buffer(cur)[:n]
            finally:
                n = ahead.result() if ahead else 0   # never leave a read running into our buffer
            cur = 1 - cur


def _copy_and_hash(store: LocalStore, fd: int, progress: Progress | None) -> Digests:
    """hash_fd for a local store: each chunk copied by the kernel into the store and
    hashed there, mapped (LocalStore.copy_in, LocalStore.name), so its bytes are
    copied once, as cp does.  COPIERS threads copy the next chunks while one
    thread hashes and names the chunks in order (all of them leave the GIL): on
    a cold 1 GiB file the copies took 0.9-1.0 s two at a time against 1.5-2.5 s
    one after the other, and the hashing hides behind them."""
    whole = xxhash.xxh3_128()
    keys: list[str] = []

    def key_of(view: memoryview) -> str:
        whole.update(view)
        keys.append(xxhash.xxh3_128_hexdigest(view))
        return blob_key(keys[-1])
    size = 0
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    copying: deque[Future[Incoming | None]] = deque()
    try:
        with ThreadPoolExecutor(COPIERS) as copiers, ThreadPoolExecutor(1) as namer:
            for i in range(COPIERS + 1):
                copying.append(copiers.submit(store.copy_in, fd, i * CHUNK_SIZE, CHUNK_SIZE))
            naming: Future[int] | None = None  # the chunk before, being named
            while copying:
                incoming = copying.popleft().result()
                if naming is not None:
                    try:
                        _settle(naming, progress)
                    except BaseException:
                        if incoming is not None:
                            store.discard(incoming)
                        raise
                    naming = None
                if incoming is None:
                    break
                naming = namer.submit(store.name, incoming, key_of)  # in order: `whole` sees them in turn
                size += incoming.size
                if incoming.size < CHUNK_SIZE:
                    break
                copying.append(copiers.submit(store.copy_in, fd, size + len(copying) * CHUNK_SIZE, CHUNK_SIZE))
            if naming is not None:
                _settle(naming, progress)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise StoreError(f"cannot write to the store {store.url}: {e.strerror}") from None
        raise
    finally:
        _drop(store, copying)
    return finish(whole, size, keys)


def _settle(naming: "Future[int]", progress: Progress | None) -> None:
    """Wait for a chunk being named; count its bytes."""
    n = naming.result()
    if progress:
        progress(n)


def _drop(store: LocalStore, copying: "deque[Future[Incoming | None]]") -> None:
    """Remove the temporary objects of copies that were not named (past the end of
    the file, or after an error)."""
    for f in copying:
        try:
            incoming = f.result()
        except Exception:
            continue
        if incoming is not None:
            store.discard(incoming)


def _store_file(registry: Registry | None, path: str, progress: Progress | None,
                cache: HashCache | None, packer: packs.Packer | None = None) -> FileEntry:
    """Read, hash and store one file (a small one into `packer`'s pack when
    given); remember its digests in the cache.  A file of more than one chunk going
    into a local store is copied by the kernel instead."""
    span = None
    try:
        started = time.time_ns()
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            store = registry.store if registry is not None else None
            if packer is not None and 0 < st.st_size < packer.below:
                got = hash_fd(None, fd, progress)  # its bytes stay in chunk_buffer()
                if 0 < got.size < packer.below:
                    span = packer.add(got.chunks[0], chunk_buffer()[:got.size])
                else:  # it grew meanwhile: store it as blobs
                    os.lseek(fd, 0, os.SEEK_SET)
                    got = hash_fd(registry, fd, None)
            elif isinstance(store, LocalStore) and st.st_size > CHUNK_SIZE:
                got = _copy_and_hash(store, fd, progress)
            else:
                got = hash_fd(registry, fd, progress)
        finally:
            os.close(fd)
    except OSError as e:
        raise LocalFileError("read", path, e) from None
    if cache is not None and got.size == st.st_size and span is None:  # the cache knows blobs, not packs
        cache.remember(st, (got.digest, got.chunks), started)
    return _file_entry(got.digest, got.size, got.chunks, st, span)


def _file_entry(digest: str, size: int, chunks: tuple[str, ...], st: os.stat_result,
                span: PackSpan | None = None) -> FileEntry:
    """The entry of a local file: its digests, executable bit and mtime."""
    return FileEntry(digest, size, chunks, bool(st.st_mode & 0o111), None,
                     {"alg": "XXH128", MTIME_KEY: st.st_mtime_ns}, span)


def _remembered(registry: Registry | None, paths: list[str], progress: Progress | None,
                cache: HashCache) -> list[FileEntry | None]:
    """Entries of the files whose stat the cache remembers and whose blobs are in
    the store (None for the others).  One thread: for these small steps more
    threads only fight over the GIL (measured 4x slower cold with 8); the
    store is asked about all blobs at once (a local store lists dense prefixes)."""
    stats: list[os.stat_result] = []
    hits: list[Remembered | None] = []
    for i in range(0, len(paths), LOOKUP_BATCH):
        try:
            some = [os.stat(p) for p in paths[i:i + LOOKUP_BATCH]]
        except OSError as e:
            raise LocalFileError("read", e.filename, e) from None
        stats += some
        hits += cache.lookup(some)
    wanted = {blob_key(k) for h in hits if h is not None for k in h[1]}
    present = registry.store.present(wanted) if registry is not None and wanted else wanted
    out: list[FileEntry | None] = []
    for st, hit in zip(stats, hits):
        if hit is None or any(blob_key(k) not in present for k in hit[1]):
            out.append(None)
            continue
        if progress:
            progress(st.st_size)
        out.append(_file_entry(hit[0], st.st_size, hit[1], st))
    return out


def upload_file(registry: Registry | None, path: str, progress: Progress | None = None) -> FileEntry:
    """Hash a local file (W&B digest and per-chunk keys) and store its chunks
    unless present.  With registry=None it only hashes."""
    return _store_file(registry, path, progress, None)


def upload_many(registry: Registry | None, paths: list[str], progress: Progress | None = None) -> list[FileEntry]:
    """upload_file over many files: those the per-user HashCache knows unchanged
    are not read; the others are hashed and stored in parallel (file I/O and
    xxhash release the GIL), in batches (one task per file costs more than a
    small file's work).  On a store that packs, small files go into packs."""
    cache = HashCache.open()
    packer = packs.Packer(registry.store) if registry is not None and registry.store.pack_below else None
    try:
        entries = _remembered(registry, paths, progress, cache) if cache else [None] * len(paths)
        todo = [i for i, e in enumerate(entries) if e is None]
        size = max(1, min(UPLOAD_BATCH, len(todo) // (4 * WORKERS)))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]

        def batch(indexes: list[int]) -> list[FileEntry]:
            return [_store_file(registry, paths[i], progress, cache, packer) for i in indexes]
        if len(batches) <= 1:
            done = [batch(b) for b in batches]
        else:
            with ThreadPoolExecutor(WORKERS) as pool:
                done = list(pool.map(batch, batches))
        for indexes, part in zip(batches, done):
            for i, e in zip(indexes, part):
                entries[i] = e
        if packer is not None:
            packer.close()
        return entries  # type: ignore[return-value]
    finally:
        if cache is not None:
            cache.flush()
