"""The per-user chunk cache every mount reads file contents through.

Blobs are content-addressed (hex xxh3-128), so one cache serves all versions, all
stores and all mounts of the user, and every byte is checked against its key on
every read: a corrupted cache file is dropped and fetched again, a corrupted store
blob raises DigestMismatchError naming the file, and bad bytes are never kept.

Layout:  <cache_dir>/blobs/<2 hex>/<32 hex>   one verified blob per file (0600, dirs 0700)
         <cache_dir>/tmp/                      files being written, renamed into blobs/
         <cache_dir>/size                      total bytes in blobs/ (text)
         <cache_dir>/lock                      flock(2) held while adding or removing files

Several processes share the directory.  Readers take no lock: files appear by rename
and only ever disappear, so a reader has the whole file or none and fetches again.
Adding and removing files (and the size file) happen under the lock, so the total
stays <= max_bytes across all processes.  Recency is each file's mtime, set by
os.utime when it is written and on every hit; eviction removes the oldest first, down
to LOW_WATER of the cap so that it runs rarely.  For a local store blobs are read in
place and the cache directory is not touched.

The directory must be private to the daemon's user: owned by it and writable by
no one else (a `--cache-dir` in a shared place such as /tmp is refused, one
UsageError line), since anyone who can add entries there could plant symlinks
the daemon, often root, would follow.  The cache's own files (lock, size,
blobs/, tmp/, each blob) are never followed through a symlink (O_NOFOLLOW,
lstat/fstat checks)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import xxhash

from ..errors import CorruptStoreError, DigestMismatchError, ObjectNotFound, UsageError
from ..registry.packs import locate
from ..registry.versions import Registry, blob_key
from .damaged import check_stored
from .packs import PackReader, read_located

log = logging.getLogger(__name__)
LOW_WATER = 0.9  # eviction frees space down to this fraction of max_bytes
STALE_TMP = 3600.0  # seconds after which a temporary file is a crashed writer's
_KEY = re.compile(r"[0-9a-f]{32}")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LocalCopy:
    """A local file holding one blob: its path, and whether a read records a use
    (sets its mtime, the cache's recency) (ChunkCache.local_copy)."""

    path: str
    touch: bool


def default_cache_dir() -> str:
    """${XDG_CACHE_HOME:-~/.cache}/artifactfs"""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "artifactfs")


def parse_size(text: str) -> int:
    """'10G' -> bytes.  Suffixes K, M, G, T are powers of 1024; no suffix means bytes."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise UsageError(f"invalid size {text!r}: use a number of bytes or a number with K, M, G or T (e.g. 10G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _mismatch(key: str, where: str) -> DigestMismatchError:
    return DigestMismatchError(f"{where}: data does not match its digest (blob {key})")


def _read_file(path: str, length: int, flags: int = 0) -> bytes:
    """The file's bytes, up to length + 1 of them (one more than expected shows a
    file that is too long).  open (with extra `flags`), read until EOF, close: about
    half the system calls of a FileIO.readall, each of which lets go of the GIL."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        data = os.read(fd, length + 1)
        while 0 < len(data) <= length and (more := os.read(fd, length + 1 - len(data))):
            data += more  # a short read before the end (a pipe, a signal)
        return data
    finally:
        os.close(fd)


def _private(path: str, st: os.stat_result, kind: str) -> None:
    """UsageError unless `st` (of `path`) is a `kind` ('dir' or 'file') owned by this
    process's user, and, a dir, writable by no one else (then no one else can put
    or replace entries in it; the modes of the files inside do not matter)."""
    uid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"cache dir: {path} is a symbolic link; remove it (the cache never follows links there)")
    if not (stat.S_ISDIR if kind == "dir" else stat.S_ISREG)(st.st_mode):
        raise UsageError(f"cache dir: {path} is not a {'directory' if kind == 'dir' else 'regular file'}")
    if st.st_uid != uid:
        raise UsageError(f"cache dir: {path} is owned by uid {st.st_uid}, not by this user (uid {uid}): "
                         "use a directory of your own")
    if kind == "dir" and st.st_mode & 0o022:
        raise UsageError(f"cache dir: {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}): "
                         "use a private directory (chmod go-w), not a shared one")


def _touch(path: str) -> None:
    """Record a use.  Explicit nanoseconds: the kernel's own file clock is coarse."""
    now = time.time_ns()
    with contextlib.suppress(FileNotFoundError):
        os.utime(path, ns=(now, now), follow_symlinks=False)


class ChunkCache:
    """Verified chunk reads shared by all versions and all mounts of the user."""

    def __init__(self, registry: Registry, cache_dir: str, max_bytes: int) -> None:
        if max_bytes < 0:
            raise UsageError("cache size must not be negative")
        self.store = registry.store
        self.cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
        self.max_bytes = max_bytes
        self._in_place = self.store.local_path(blob_key("0" * 32)) is not None
        self._mutex = threading.Lock()  # counters and in-flight fetches
        self._flock_mutex = threading.Lock()  # flock(2) is per open file, not per thread
        self._inflight: dict[str, Future[bytes]] = {}
        self._counts = {"bytes_fetched": 0, "fetches": 0, "hits": 0, "evictions": 0}
        self._size = 0
        self._packs = PackReader(self.store)  # a packed file's whole pack is fetched once
        if self._in_place:
            return
        self._blobs = os.path.join(self.cache_dir, "blobs")
        self._tmp = os.path.join(self.cache_dir, "tmp")
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        _private(self.cache_dir, os.stat(self.cache_dir), "dir")  # a link to a private dir is fine
        for d in (self._blobs, self._tmp):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
            _private(d, os.lstat(d), "dir")
        self._lock_fd = self._open_own("lock", os.O_RDWR | os.O_CREAT)
        with self._exclusive():
            self._remove_stale_tmp()
            self._set_total(sum(size for _, size, _ in self._scan()))

    # -- reads -----------------------------------------------------------------
    def read_chunk(self, key: str, length: int, where: str) -> bytes:
        """Blocking (call from a worker thread): the `length` bytes of blob `key`,
        verified; DigestMismatchError names `where` on a mismatch."""
        if not _KEY.fullmatch(key):
            raise CorruptStoreError(f"{where}: invalid blob key {key!r}")
        if self._in_place:
            return self._read_in_place(key, length, where)
        data = self._cached(key, length)
        return data if data is not None else self._fetch_once(key, length, where)

    def prefetch(self, keys: list[str]) -> None:
        """A hint: these blobs are about to be read one after the other.  A remote
        store starts fetching those neither cached here nor packed (a pack is
        fetched whole by the first of its files) in the background."""
        if self._in_place:
            return
        self.store.prefetch([blob_key(k) for k in keys
                             if _KEY.fullmatch(k) and not locate(k) and not os.path.exists(self._path(k))])

    def local_copy(self, key: str) -> LocalCopy | None:
        """Where blob `key` is (or will be, once fetched) a whole file of its own on
        this machine: the local store's blob file, else this cache's copy (whose
        mtime is its recency).  None for an invalid key.  The file may be missing
        (a packed blob, a blob not fetched yet) and its bytes must still be checked
        against the key, as read_chunk does."""
        if not _KEY.fullmatch(key):
            return None
        if self._in_place:
            path = self.store.local_path(blob_key(key))
            return None if path is None else LocalCopy(path, touch=False)
        return LocalCopy(self._path(key), touch=True)

    def _read_in_place(self, key: str, length: int, where: str) -> bytes:
        path = self.store.local_path(blob_key(key))
        assert path is not None
        try:
            data = _read_file(path, length)
        except FileNotFoundError:  # a packed file (a store that an S3 store was copied to)
            try:
                data = read_located(self.store, key, length, where)
            except ObjectNotFound:
                raise self._missing(key, where) from None
        self._count(bytes_fetched=len(data), fetches=1)
        check_stored(self.store, data, key, length, where)
        return data

    def _path(self, key: str) -> str:
        return os.path.join(self._blobs, key[:2], key)

    def _cached(self, key: str, length: int) -> bytes | None:
        """The blob from the cache directory if there and intact; a bad copy is removed."""
        path = self._path(key)
        try:
            data = _read_file(path, length, os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            data = b""  # a symlink where a blob should be: removed below, like a corrupt copy
        if len(data) != length or xxhash.xxh3_128_hexdigest(data) != key:
            log.warning("cached copy of blob %s is corrupt; fetching it again", key)
            with self._exclusive():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self._set_total(sum(size for _, size, _ in self._scan()))  # its size may have changed too
            return None
        _touch(path)
        self._count(hits=1)
        return data

    def _fetch_once(self, key: str, length: int, where: str) -> bytes:
        """Fetch, verify and keep the blob; threads asking for the same key share one fetch."""
        with self._mutex:
            future = self._inflight.get(key)
            leader = future is None
            if leader:
                future = self._inflight[key] = Future()
        assert future is not None
        if not leader:
            try:
                return future.result()
            except DigestMismatchError:
                raise _mismatch(key, where) from None  # name this reader's file
            except ObjectNotFound:
                raise self._missing(key, where) from None
        try:
            data = self._cached(key, length)  # another thread may have just stored it
            fetched = data is None
            if data is None:
                data = self._fetch(key, length, where)
        except BaseException as e:
            with self._mutex:
                del self._inflight[key]
            future.set_exception(e)
            raise
        future.set_result(data)  # waiting threads need not wait for the disk
        try:
            if fetched:
                self._keep(key, data)
        finally:
            with self._mutex:
                del self._inflight[key]
        return data

    def _fetch(self, key: str, length: int, where: str) -> bytes:
        try:
            data = read_located(self.store, key, length, where, self._packs)  # its blob, or a pack holding it
        except ObjectNotFound:
            raise self._missing(key, where) from None
        self._count(bytes_fetched=len(data), fetches=1)
        check_stored(self.store, data, key, length, where)
        return data

    def _missing(self, key: str, where: str) -> ObjectNotFound:
        return ObjectNotFound(f"{where}: blob {key} is missing from {self.store.url}")

    # -- adding and evicting (under the lock) -------------------------------------
    def _keep(self, key: str, data: bytes, retry: bool = True) -> None:
        """Store a verified blob; a full disk only costs the caching, not the read.
        A disk that fills before the cap lowers the cap to what the cache holds
        (once, logged), and the oldest blobs make room from then on."""
        if len(data) > self.max_bytes:
            return  # would never fit
        tmp = os.path.join(self._tmp, uuid.uuid4().hex)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if e.errno == errno.ENOSPC and retry and self._fit_to_disk(len(data)):
                return self._keep(key, data, retry=False)
            log.warning("cannot cache blob %s in %s: %s", key, self.cache_dir, e.strerror)
            return
        _touch(tmp)
        path = self._path(key)
        with self._exclusive():
            if os.path.exists(path):  # another process stored it meanwhile
                os.unlink(tmp)
                return
            total = self._total()
            if total + len(data) > self.max_bytes:  # make room first: the cap holds at every instant
                total = self._evict(len(data))
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            os.rename(tmp, path)
            self._set_total(total + len(data))

    def _fit_to_disk(self, incoming: int) -> bool:
        """The cache's disk is full below the cap: the cap becomes what the cache
        holds now less `incoming` (a new blob is written before older ones make
        room), and the oldest blobs make room for it.  False when there is
        nothing to evict."""
        with self._exclusive():
            total = self._total()
            if total <= incoming:
                return False
            if self.max_bytes > total:  # the first time: said once
                log.warning("the disk of the cache %s is full at %d bytes, below its cap of %d: this mount "
                            "keeps less there from now on (the oldest blobs make room)", self.cache_dir, total,
                            self.max_bytes)
            self.max_bytes = total - incoming
            self._set_total(self._evict(incoming))
        return True

    def _evict(self, incoming: int) -> int:
        """Remove least recently used files until `incoming` more bytes leave the cache
        at LOW_WATER of the cap; returns the new total."""
        files = sorted(self._scan(), key=lambda f: f[2])
        total = sum(size for _, size, _ in files)
        target = max(0, int(self.max_bytes * LOW_WATER) - incoming)
        evicted = 0
        for path, size, _ in files:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            evicted += 1
        self._count(evictions=evicted)
        return total

    def _scan(self) -> Iterator[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every cached blob."""
        with os.scandir(self._blobs) as subdirs:
            for sub in subdirs:
                if not sub.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(sub.path) as entries:
                    for e in entries:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if _KEY.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                            yield e.path, st.st_size, st.st_mtime_ns

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP
        with os.scandir(self._tmp) as entries:
            for e in entries:
                with contextlib.suppress(FileNotFoundError):
                    if e.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(e.path)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._flock_mutex:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open_own(self, name: str, flags: int) -> int:
        """A descriptor of the cache's own file `name`, never through a symlink;
        UsageError if it is not a regular file of ours."""
        path = os.path.join(self.cache_dir, name)
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                _private(path, os.lstat(path), "file")  # names the symlink
            raise
        try:
            _private(path, os.fstat(fd), "file")
        except UsageError:
            os.close(fd)
            raise
        return fd

    def _read_size(self) -> int:
        """The size file's total; FileNotFoundError or ValueError if missing or
        unreadable (a symlink counts as unreadable: _set_total replaces it)."""
        try:
            fd = os.open(os.path.join(self.cache_dir, "size"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError("the size file is a symbolic link") from None
            raise
        with open(fd, closefd=True) as f:
            return int(f.read())

    def _total(self) -> int:
        """The shared total (under the lock); rescanned if the size file is unreadable."""
        try:
            return self._read_size()
        except (FileNotFoundError, ValueError):
            return sum(size for _, size, _ in self._scan())

    def _set_total(self, total: int) -> None:
        tmp = os.path.join(self._tmp, f"size-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w", closefd=True) as f:
            f.write(str(total))
        os.replace(tmp, os.path.join(self.cache_dir, "size"))
        self._size = total

    # -- counters ----------------------------------------------------------------
    def _count(self, **deltas: int) -> None:
        with self._mutex:
            for k, v in deltas.items():
                self._counts[k] += v

    def stats(self) -> dict[str, int]:
        """Counters since start: bytes_fetched (bytes read from the store, in place or
        remote), fetches, hits (served from cache_dir), evictions, cache_bytes (current
        size of cache_dir, as last seen by any process sharing it)."""
        if not self._in_place:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._size = self._read_size()
        with self._mutex:
            return {**self._counts, "cache_bytes": self._size}

    def close(self) -> None:
        """Release the lock file descriptor."""
        if not self._in_place and self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
