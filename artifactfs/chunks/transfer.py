"""Moving file contents between local disk and the store: hash-and-upload,
download into a directory without ever leaving it, and verification.

Speed (bench/bench_put_get.py, docs/benchmarks.md): worker threads read into
reused CHUNK_SIZE buffers (fresh 8 MiB objects cost page faults per chunk);
each file is read once for hashing and storing, a large one with the next
chunk read by a helper thread meanwhile; small files go to workers in batches;
an unchanged file is recognised by its stat through the HashCache instead of
being read again; downloads open each directory once (an O_NOFOLLOW fd) and
create files relative to it, asking the kernel to read the next blob ahead.

Entries carry each file's mtime (store-format.md 3.5): put records st_mtime_ns,
downloads set it back.  Symlink entries are created as symlinks (a temporary
link renamed over the name), never written through; a second name of a hard
link is downloaded as its own copy.  An OSError on the user's side is one
LocalFileError naming the local path."""
from __future__ import annotations

import errno
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import xxhash

from ..errors import DigestMismatchError, LocalFileError, ObjectNotFound, StoreError, shown
from ..registry.manifest import CHUNK_SIZE, MTIME_KEY, FileEntry, Leaf, SymlinkEntry, b64_digest
from ..registry.names import check_path
from ..registry.versions import Registry, blob_key
from . import references
from .hashcache import Digests, HashCache

WORKERS = 8
UPLOAD_BATCH = 64         # files per upload task
LOOKUP_BATCH = 500        # files per digest-cache query
DIR_BATCH = 256          # directory fds held open at once while downloading
PREFETCH = 8             # chunks of a file asked for ahead of the one being written
Progress = Callable[[int], None]
_tls = threading.local()


def _buffer(slot: int = 0) -> memoryview:
    """This thread's reusable CHUNK_SIZE buffer number `slot` (0 or 1)."""
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = [None, None]
    if bufs[slot] is None:
        bufs[slot] = memoryview(bytearray(CHUNK_SIZE))
    return bufs[slot]


def _read_full(fd: int, view: memoryview) -> int:
    """Fill `view` from fd (short only at end of file); bytes read."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _write_full(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _put_blob(registry: Registry, key: str, view: memoryview) -> None:
    """Store a chunk unless present.  A local store writes straight from our
    buffer; other stores get bytes they may keep.  A failed write (a full disk)
    is the store's error, not the source file's."""
    data = view if registry.store.local_path(blob_key(key)) is not None else bytes(view)
    try:
        registry.put_blob(key, data)
    except OSError as e:
        raise StoreError(f"cannot write to the store {registry.store.url}: {e.strerror}") from None


def _hash_fd(registry: Registry | None, fd: int, progress: Progress | None) -> tuple[str, int, tuple[str, ...]]:
    """Read fd once: W&B digest, size and chunk keys; store each chunk unless present."""
    buf = _buffer()
    n = _read_full(fd, buf)
    if n < CHUNK_SIZE:  # the whole file in one read: its digest is its blob key
        raw = xxhash.xxh3_128_digest(buf[:n])
        chunks: tuple[str, ...] = (raw.hex(),) if n else ()
        if registry is not None and n:
            _put_blob(registry, chunks[0], buf[:n])
        if progress:
            progress(n)
        return b64_digest(raw), n, chunks
    whole = xxhash.xxh3_128()
    keys: list[str] = []
    size = 0
    for view in _overlapped_chunks(fd, n):
        whole.update(view)
        key = xxhash.xxh3_128_hexdigest(view)
        keys.append(key)
        size += len(view)
        if registry is not None:
            _put_blob(registry, key, view)
        if progress:
            progress(len(view))
    if len(keys) == 1:
        keys = [whole.hexdigest()]  # exactly one full chunk: its key is the file's digest
    return b64_digest(whole.digest()), size, tuple(keys)


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
                ahead = reader.submit(_read_full, fd, _buffer(1 - cur))
            try:
                yield _buffer(cur)[:n]
            finally:
                n = ahead.result() if ahead else 0   # never leave a read running into our buffer
            cur = 1 - cur


def _store_file(registry: Registry | None, path: str, progress: Progress | None,
                cache: HashCache | None) -> FileEntry:
    """Read, hash and store one file; remember its digests in the cache."""
    try:
        started = time.time_ns()
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            digest, size, chunks = _hash_fd(registry, fd, progress)
        finally:
            os.close(fd)
    except OSError as e:
        raise LocalFileError("read", path, e) from None
    if cache is not None and size == st.st_size:
        cache.remember(st, (digest, chunks), started)
    return _file_entry(digest, size, chunks, st)


def _file_entry(digest: str, size: int, chunks: tuple[str, ...], st: os.stat_result) -> FileEntry:
    """The entry of a local file: its digests, executable bit and mtime."""
    return FileEntry(digest, size, chunks, bool(st.st_mode & 0o111), None,
                     {"alg": "XXH128", MTIME_KEY: st.st_mtime_ns})


def _remembered(registry: Registry | None, paths: list[str], progress: Progress | None,
                cache: HashCache) -> list[FileEntry | None]:
    """Entries of the files whose stat the cache remembers and whose blobs are in
    the store (None for the others).  One thread: for these small steps more
    threads only fight over the GIL (measured 4x slower cold with 8); the
    store is asked about all blobs at once (a local store lists dense prefixes)."""
    stats: list[os.stat_result] = []
    hits: list[Digests | None] = []
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
    small file's work)."""
    cache = HashCache.open()
    try:
        entries = _remembered(registry, paths, progress, cache) if cache else [None] * len(paths)
        todo = [i for i, e in enumerate(entries) if e is None]
        size = max(1, min(UPLOAD_BATCH, len(todo) // (4 * WORKERS)))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]

        def batch(indexes: list[int]) -> list[FileEntry]:
            return [_store_file(registry, paths[i], progress, cache) for i in indexes]
        if len(batches) <= 1:
            done = [batch(b) for b in batches]
        else:
            with ThreadPoolExecutor(WORKERS) as pool:
                done = list(pool.map(batch, batches))
        for indexes, part in zip(batches, done):
            for i, e in zip(indexes, part):
                entries[i] = e
        return entries  # type: ignore[return-value]
    finally:
        if cache is not None:
            cache.flush()


def read_chunk(registry: Registry, entry: FileEntry, index: int, where: str) -> bytes:
    """One verified chunk of a file; DigestMismatchError names the file."""
    key = entry.chunks[index]
    data = registry.get_blob(key)
    _verify(data, key, entry.chunk_span(index)[1], where)
    return data


def _verify(data: bytes | memoryview, key: str, length: int, where: str) -> None:
    if len(data) != length or xxhash.xxh3_128_hexdigest(data) != key:
        raise DigestMismatchError(f"{where}: stored data does not match its digest (blob {key})")


def _read_chunk_into(registry: Registry, entry: FileEntry, index: int, where: str, buf: memoryview) -> memoryview:
    """Like read_chunk, but a local store's blob is read into `buf`."""
    key = entry.chunks[index]
    length = entry.chunk_span(index)[1]
    bkey = blob_key(key)
    path = registry.store.local_path(bkey)
    if path is None:
        return memoryview(read_chunk(registry, entry, index, where))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ObjectNotFound(f"object {bkey} not found in {registry.store.url}") from None
    try:
        if os.fstat(fd).st_size != length:
            raise DigestMismatchError(f"{where}: stored data does not match its digest (blob {key})")
        view = buf[:length]
        n = _read_full(fd, view)
    finally:
        os.close(fd)
    _verify(view[:n], key, length, where)
    return view


def _open_dir(root_fd: int, parts: list[str], where: str) -> int:
    """fd of directory root/parts..., made as needed; a symlink or file in the way
    is refused (`where`: the local path of the file that needs it, for messages)."""
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise LocalFileError("write", where, f"{shown('/'.join(parts[:i + 1]))} is not a directory "
                                     "(symlink or file in the way)") from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fd_matches(fd: int, entry: FileEntry) -> bool:
    try:
        return _hash_fd(None, fd, None)[0] == entry.digest
    except OSError:
        return False


def file_matches(path: str, entry: FileEntry) -> bool:
    """True when the local file has the entry's size and digest (always read: no cache)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and st.st_size == entry.size and _fd_matches(fd, entry)
    finally:
        os.close(fd)


def _existing_matches(dir_fd: int, name: str, where: str, entry: FileEntry) -> bool:
    """Is `name` already the right file?  Then its mtime is set to the entry's.
    Refuses a symlink or directory there."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
        raise LocalFileError("write", where, "a symlink or directory is in the way")
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        return False
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        if not _fd_matches(fd, entry):
            return False
        if entry.mtime_ns is not None and st.st_mtime_ns != entry.mtime_ns:
            os.utime(fd, ns=(st.st_atime_ns, entry.mtime_ns))
        return True
    finally:
        os.close(fd)


def _temp_name() -> str:
    return f".artifactfs-{uuid.uuid4().hex}"


def _file_into(registry: Registry, dir_fd: int, name: str, path: str, where: str, entry: FileEntry,
               progress: Progress | None) -> None:
    """Write one verified file as `name` in dir_fd, atomically (temp file, then rename)."""
    if _existing_matches(dir_fd, name, where, entry):
        if progress:
            progress(entry.size)
        return
    tmp = _temp_name()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o755 if entry.executable else 0o644, dir_fd=dir_fd)
    try:
        for view in _pieces(registry, entry, path):
            _write_full(fd, view)
            if progress:
                progress(len(view))
        if entry.mtime_ns is not None:
            os.utime(fd, ns=(time.time_ns(), entry.mtime_ns))
        os.close(fd)
        fd = -1
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def _link_into(dir_fd: int, name: str, where: str, entry: SymlinkEntry) -> None:
    """Make `name` in dir_fd the symlink, replacing a file or link there (by
    rename: what an old link points to is never touched); a directory is refused."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise LocalFileError("write", where, "a directory is in the way of a symlink")
        if stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dir_fd) == entry.target:
            return
    tmp = _temp_name()
    os.symlink(entry.target, tmp, dir_fd=dir_fd)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def _download_into(registry: Registry, dir_fd: int, name: str, path: str, where: str, entry: Leaf,
                   progress: Progress | None) -> None:
    """One entry into dir_fd; an OSError on our side names the local path `where`."""
    try:
        if isinstance(entry, SymlinkEntry):
            _link_into(dir_fd, name, where, entry)
        else:
            _file_into(registry, dir_fd, name, path, where, entry, progress)
    except OSError as e:
        raise LocalFileError("write", where, e) from None


def _pieces(registry: Registry, entry: FileEntry, path: str) -> Iterator[memoryview | bytes]:
    """The verified bytes of a file, piece by piece: its blobs, or for a reference
    the bytes at its URI (references.pieces checks them)."""
    if entry.ref is not None:
        yield from references.pieces(entry)
        return
    chunks = entry.chunks
    registry.store.prefetch([blob_key(k) for k in chunks[1:1 + PREFETCH]])
    for i in range(len(chunks)):
        if i + PREFETCH < len(chunks):  # one more ahead for each one taken
            registry.store.prefetch([blob_key(chunks[i + PREFETCH])])
        try:
            view = _read_chunk_into(registry, entry, i, path, _buffer())
        except OSError as e:
            raise StoreError(f"cannot read {shown(path)} from the store {registry.store.url}: "
                             f"{e.strerror}") from None
        yield view


def _by_directory(items: Iterable[tuple[str, Leaf]]) -> dict[str, list[tuple[str, str, Leaf]]]:
    """dir -> [(name, path, entry)], every path checked first."""
    out: dict[str, list[tuple[str, str, Leaf]]] = {}
    for path, entry in items:
        check_path(path)
        d, _, name = path.rpartition("/")
        out.setdefault(d, []).append((name, path, entry))
    return out


def _batches(keys: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(keys), n):
        yield keys[i:i + n]


def download_many(registry: Registry, root: str, items: list[tuple[str, Leaf]],
                  progress: Progress | None = None) -> None:
    """Write verified files and symlinks into root, in parallel, never leaving
    root: every directory is opened once with O_NOFOLLOW (made if missing), and
    entries are created relative to that fd.  LocalFileError names a local
    path that could not be written; what was written before stays whole."""
    groups = _by_directory(items)
    try:
        os.makedirs(root, exist_ok=True)
        root_fd = os.open(os.path.realpath(root), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise LocalFileError("write", root, e) from None
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            for batch in _batches(sorted(groups), DIR_BATCH):
                fds: dict[str, int] = {}
                futures = []
                try:
                    for d in batch:  # in sorted order, so parents are made before children
                        where = os.path.join(root, groups[d][0][1])
                        try:
                            fds[d] = _open_dir(root_fd, d.split("/") if d else [], where)
                        except OSError as e:
                            raise LocalFileError("write", os.path.join(root, d), e) from None
                    futures = [pool.submit(_download_into, registry, fds[d], name, path,
                                           os.path.join(root, path), entry, progress)
                               for d in batch for name, path, entry in groups[d]]
                    wait(futures)  # every worker is done with the fds before they are closed
                finally:
                    for fd in fds.values():
                        os.close(fd)
                for f in futures:
                    f.result()
    finally:
        os.close(root_fd)


def verify_dir(root: str, items: Iterable[tuple[str, Leaf]]) -> list[str]:
    """Problems found comparing `root` with the entries: one line per bad entry
    (paths escaped).  Nothing is followed: a symlink where a file belongs is a
    problem, a symlink entry must be a symlink with the same target."""
    problems = []
    for path, entry in items:
        target = os.path.join(root, path)
        try:
            st = os.lstat(target)
            if isinstance(entry, SymlinkEntry):
                if not stat.S_ISLNK(st.st_mode) or os.readlink(target) != entry.target:
                    problems.append(f"{shown(path)}: not a symlink to {shown(entry.target)}")
            elif not stat.S_ISREG(st.st_mode):
                problems.append(f"{shown(path)}: not a regular file")
            elif not file_matches(target, entry):
                problems.append(f"{shown(path)}: content does not match digest {entry.digest}")
        except (FileNotFoundError, NotADirectoryError):
            problems.append(f"{shown(path)}: missing")
        except OSError as e:
            problems.append(f"{shown(path)}: {e.strerror}")
    return problems
