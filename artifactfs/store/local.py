"""The embedded default store: a directory tree, safe on a shared POSIX filesystem.

Objects are written to a temporary name and renamed into place, so readers never
see a partial object.  put_if_absent uses link(2), which fails atomically if the
target exists (also over NFS).  compare_and_swap holds a lock file, created with
link(2) as well (locks.py), for the read-compare-replace.  Temporary and
lock files carry a '#', which no key may contain, so they never shadow a key."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import xxhash

from ..errors import ObjectNotFound, PreconditionFailed, StoreError
from ..fileio import copy_range, write_new
from .aside import move_aside
from .base import ObjectStat, ObjectStore
from .locks import LinkLock

INTERNAL = "#"  # marks temp and lock files; refused in keys
TEMPORARY = INTERNAL + "tmp-"  # an object being written (renamed into place when whole)
SYNC_EACH_MAX = 256     # objects a sync() fsyncs one by one; above, one syncfs(2)
SYNC_THREADS = 8
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait


def etag_of(data: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


# What a file:// URL must escape so that open_store() parses it back to the same path:
# '%' (unquote), '#' and '?' (fragment and query) and the characters urlparse drops.
_URL_ESCAPES = {"%": "%25", "#": "%23", "?": "%3F", "\t": "%09", "\n": "%0A", "\r": "%0D"}


@dataclass
class _Unsynced:
    """Objects of one store directory this process wrote (or relied on) since
    its last sync(), and the directories whose entries changed."""

    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    overflow: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)     # the set
    syncing: threading.Lock = field(default_factory=threading.Lock)  # one sync() at a time

    def add(self, path: str, new: bool) -> None:
        """An object to sync; `new`: its folder's entry too."""
        with self.lock:
            if self.overflow or len(self.files) >= SYNC_EACH_MAX:
                self.overflow = True
                return
            self.files.add(path)
            if new:
                self.dirs.add(os.path.dirname(path))

    def add_dir(self, path: str) -> None:
        """A folder made: the entry in its parent to sync."""
        with self.lock:
            self.dirs.add(os.path.dirname(path))


@dataclass
class Incoming:
    """A temporary object of LocalStore.copy_in(): its path, its fd (-1 once
    closed) and its size in bytes."""

    tmp: str
    fd: int
    size: int


_UNSYNCED: dict[str, _Unsynced] = {}
_UNSYNCED_LOCK = threading.Lock()


class LocalStore(ObjectStore):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.url = "file://" + "".join(_URL_ESCAPES.get(c, c) for c in self.root)
        with _UNSYNCED_LOCK:  # shared by every LocalStore of this directory in the process
            self._unsynced = _UNSYNCED.setdefault(self.root, _Unsynced())

    # -- helpers -------------------------------------------------------------
    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or "\0" in key or INTERNAL in key or ".." in key.split("/"):
            raise StoreError(f"invalid object key {key!r}")
        return os.path.join(self.root, key)

    def _write_tmp(self, path: str, data: bytes, fsync: bool) -> str:
        d = os.path.dirname(path)
        tmp = os.path.join(d, f"{TEMPORARY}{uuid.uuid4().hex}")
        try:
            write_new(tmp, data, 0o644, fsync)
        except FileNotFoundError:  # first object under this prefix (checked only then: hot path)
            self._makedirs(d)
            write_new(tmp, data, 0o644, fsync)
        return tmp

    def _makedirs(self, d: str) -> None:
        """Create the folders of a new prefix; their parents' entries are to sync."""
        top = d
        while not os.path.isdir(top):
            self._unsynced.add_dir(top)
            top = os.path.dirname(top)
        os.makedirs(d, mode=0o755, exist_ok=True)

    @staticmethod
    def _fsync_dir(path: str) -> None:
        fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reads ---------------------------------------------------------------
    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, etag_of(data)

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def present(self, keys: Iterable[str]) -> set[str]:
        """A directory holding many of the keys (and not many more) is listed once
        instead of a stat per key: cold, 10,000 blobs in 256 directories take
        0.03 s listed vs 0.15 s stat'ed."""
        by_dir: dict[str, list[str]] = {}
        for k in keys:
            by_dir.setdefault(os.path.dirname(self._path(k)), []).append(k)
        out = set()
        for d, ks in by_dir.items():
            names = self._listing(d, len(ks))
            if names is None:
                out.update(k for k in ks if self.exists(k))
            else:
                out.update(k for k in ks if k.rpartition("/")[2] in names)
        for k in out:  # relied on by the caller's next commit (maybe not yet durable)
            self._unsynced.add(self._path(k), new=False)
        return out

    @staticmethod
    def _listing(d: str, wanted: int) -> set[str] | None:
        """Names in `d` when listing beats `wanted` stats (None: it would not)."""
        if wanted < 8:
            return None
        try:
            if os.stat(d).st_size > wanted * 1024:  # ~16 entries per wanted key or more
                return None
            return set(os.listdir(d))
        except FileNotFoundError:
            return set()

    def size(self, key: str) -> int:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def prefetch(self, keys: list[str]) -> None:
        """Have the kernel start reading the objects (posix_fadvise WILLNEED): a
        helper thread reading ahead measured slower."""
        for key in keys:
            try:
                fd = os.open(self._path(key), os.O_RDONLY)
            except OSError:
                continue  # reported properly when it is read
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def list(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        base, _, stem = prefix.rpartition("/")
        top = os.path.join(self.root, base) if base else self.root
        try:
            names = sorted(os.listdir(top))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            if not name.startswith(stem) or INTERNAL in name:
                continue
            key = f"{base}/{name}" if base else name
            full = os.path.join(top, name)
            if os.path.isdir(full):
                if recursive:
                    yield from self.list(key + "/", True)
                else:
                    yield key + "/"
            else:
                yield key

    def list_stat(self, prefix: str) -> Iterator[ObjectStat]:
        for key in self.list(prefix):
            try:
                st = os.stat(self._path(key))
            except FileNotFoundError:
                continue  # deleted meanwhile
            yield ObjectStat(key, st.st_size, st.st_mtime)

    # -- writes --------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._write_tmp(path, data, fsync=False), path)
        self._unsynced.add(path, new=True)

    def put_new(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if os.path.exists(path):
            self._unsynced.add(path, new=False)
            return False
        self.put(key, data)
        return True

    def put_file(self, key: str, path: str, offset: int, length: int) -> bool:
        """put_new() of the bytes [offset, offset + length) of a local file, which
        never pass through user space: when they are the whole file and it is on
        the store's filesystem, the object is a hard link of the file itself (made
        0644; the caller must never change that file again: it is the object now),
        else they are copied by the kernel (copy_file_range(2)) into a temporary
        object renamed into place.  True if the object was written."""
        final = self._path(key)
        if os.path.exists(final):
            self._unsynced.add(final, new=False)
            return False
        src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(src)
            if offset == 0 and length == st.st_size and st.st_dev == os.stat(self.root).st_dev:
                os.fchmod(src, 0o644)
                if not self._link(path, final):
                    return False
            else:
                tmp = self._write_tmp(final, b"", fsync=False)
                try:
                    dst = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC)
                    try:
                        if copy_range(src, dst, offset, length) != length:
                            raise OSError(errno.EIO, f"{path} is shorter than expected")
                        start_writeback(dst)
                    finally:
                        os.close(dst)
                    os.replace(tmp, final)
                except BaseException:
                    os.unlink(tmp)
                    raise
        finally:
            os.close(src)
        self._unsynced.add(final, new=True)
        return True

    def copy_in(self, src: int, offset: int, length: int) -> "Incoming | None":
        """Up to `length` bytes of fd `src` from `offset`, copied by the kernel
        (copy_file_range(2)) into a new temporary object; None at the end of `src`.
        The caller must hand it to name() or discard()."""
        tmp = os.path.join(self.root, f"{TEMPORARY}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            n = copy_range(src, fd, offset, length)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        incoming = Incoming(tmp, fd, n)
        if not n:
            self.discard(incoming)
            return None
        return incoming

    def name(self, incoming: "Incoming", key_of: Callable[[memoryview], str]) -> int:
        """Give the object of copy_in() the key that key_of(its bytes) gives; key_of
        reads them mapped (no copy into this process), so a `put` of a big file
        copies its bytes once, as cp does.  Returns its size (name_as)."""
        try:
            with mmap.mmap(incoming.fd, incoming.size, prot=mmap.PROT_READ,
                           flags=mmap.MAP_SHARED | mmap.MAP_POPULATE) as mm:
                with memoryview(mm) as view:
                    key = key_of(view)
        except BaseException:
            self.discard(incoming)
            raise
        return self.name_as(incoming, key)

    def name_as(self, incoming: "Incoming", key: str) -> int:
        """Rename the object of copy_in() onto `key`, whose bytes the caller vouches
        it holds, and start its writeback (start_writeback); dropped when `key` is
        present already.  Returns its size in bytes."""
        try:
            final = self._path(key)
            if os.path.exists(final):
                self._unsynced.add(final, new=False)
                self.discard(incoming)
                return incoming.size
            start_writeback(incoming.fd)
            os.close(incoming.fd)
            incoming.fd = -1
        except BaseException:
            self.discard(incoming)
            raise
        try:
            try:
                os.replace(incoming.tmp, final)
            except FileNotFoundError:
                self._makedirs(os.path.dirname(final))
                os.replace(incoming.tmp, final)
        except BaseException:
            os.unlink(incoming.tmp)
            raise
        self._unsynced.add(final, new=True)
        return incoming.size

    @staticmethod
    def discard(incoming: "Incoming") -> None:
        """Remove an object of copy_in() that will not be named."""
        if incoming.fd >= 0:
            os.close(incoming.fd)
            incoming.fd = -1
        os.unlink(incoming.tmp)

    def set_aside(self, key: str, damaged: Callable[[bytes], bool]) -> str | None:
        aside = f"damaged/{key}.{time.strftime('%Y%m%dT%H%M%S')}"
        return aside if move_aside(self._path(key), self._path(aside), damaged) else None

    def _link(self, path: str, final: str) -> bool:
        """link(2) `path` as `final`; False when `final` exists already."""
        try:
            try:
                os.link(path, final)
            except FileNotFoundError:
                self._makedirs(os.path.dirname(final))
                os.link(path, final)
        except FileExistsError:
            return False
        return True

    def put_visible(self, key: str, data: bytes) -> None:
        """rename(2) makes it visible at once, to other NFS clients too; no fsync."""
        self.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if os.path.exists(path):
            return False
        tmp = self._write_tmp(path, data, fsync=True)
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Over NFS a retransmitted LINK can report EEXIST although ours was made:
            # then the temp file has a second name (open(2), O_EXCL notes).
            if os.stat(tmp).st_nlink != 2:
                return False
        finally:
            os.unlink(tmp)
        self._fsync_dir(path)
        return True

    def compare_and_swap(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key)
        tmp = self._write_tmp(path, data, fsync=True)
        try:
            with self._lock(path):
                try:
                    with open(path, "rb") as f:
                        current: str | None = etag_of(f.read())
                except FileNotFoundError:
                    current = None
                if current != etag:
                    raise PreconditionFailed(f"{key} changed concurrently")
                os.replace(tmp, path)
                self._fsync_dir(path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return etag_of(data)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def remove_temporaries(self, older_than: float) -> int:
        """The temporary files (`#tmp-*`) of writes that never finished: a put or a
        commit killed mid-write, a mount's daemon killed while it stored chunks
        ahead.  gc passes its grace period, so a write in progress is left alone."""
        removed = 0
        now = time.time()
        for folder, _, names in os.walk(self.root):
            for name in names:
                if not name.startswith(TEMPORARY):
                    continue
                path = os.path.join(folder, name)
                try:
                    if now - os.lstat(path).st_mtime > older_than:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    pass  # its writer finished meanwhile
        return removed

    def sync(self) -> None:
        """Make durable what this process put (or found present) since its last
        sync: each object fdatasync'd and each changed folder fsync'd, in
        parallel, while there are at most SYNC_EACH_MAX of them; else one
        syncfs(2) of the store's filesystem.  Fsyncing only our objects leaves
        out whatever else is dirty on that filesystem (a draft's staged copy of
        the same bytes, other programs' writes): on a shared disk that halved
        the commit of a 1 GiB draft file (docs/benchmarks.md, issue 10)."""
        pending = self._unsynced
        with pending.syncing:
            with pending.lock:
                files, dirs, overflow = pending.files, pending.dirs, pending.overflow
                pending.files, pending.dirs, pending.overflow = set(), set(), False
            try:
                if overflow:
                    self._syncfs()
                elif files or dirs:
                    with ThreadPoolExecutor(SYNC_THREADS) as pool:
                        list(pool.map(_fsync_path, files, [True] * len(files)))
                        list(pool.map(_fsync_path, dirs, [False] * len(dirs)))
            except BaseException:
                with pending.lock:  # not durable: the next sync() must flush everything
                    pending.overflow = True
                raise

    def _syncfs(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc.syncfs(fd) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
        finally:
            os.close(fd)

    # -- the NFS-safe lock ------------------------------------------------------
    def _lock(self, path: str) -> LinkLock:
        return LinkLock(path + INTERNAL + "lock")


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages to disk now, without
    waiting (sync_file_range(2), SYNC_FILE_RANGE_WRITE): a new blob is then mostly
    on disk by the time sync() fdatasyncs it, so a big put or commit writes to disk
    while it copies instead of all at the end (docs/benchmarks.md, issue 10).  Best
    effort: it makes nothing durable by itself."""
    _libc.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def _fsync_path(path: str, data_only: bool) -> None:
    """fdatasync a file (data_only) or fsync a folder; gone meanwhile: nothing to do."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        (os.fdatasync if data_only else os.fsync)(fd)
    finally:
        os.close(fd)
