"""Download into a directory without ever leaving it, every byte verified.

Each directory is opened once (an O_NOFOLLOW fd) and files are created relative
to it, the kernel asked to read the next blob ahead.  Files arrive atomically
(a temporary name renamed over the target) with the entry's mtime; symlink
entries are created as symlinks (a temporary link renamed over the name), never
written through; a second name of a hard link is downloaded as its own copy;
an empty folder entry is made as a folder (like every folder on the way: mkdir,
then opened with O_NOFOLLOW)."""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import xxhash

from ..errors import LocalFileError, ObjectNotFound, StoreError, shown
from ..registry.manifest import CHUNK_SIZE, DirEntry, Entry, FileEntry, Leaf, SymlinkEntry
from ..registry.names import check_path
from ..registry.versions import Registry, blob_key
from . import packs, references
from .buffers import WORKERS, Progress, chunk_buffer, read_full, write_full
from .damaged import check_stored, damaged_blob
from .verify import fd_matches

DIR_BATCH = 256          # directory fds held open at once while downloading
PREFETCH = 8             # chunks of a file asked for ahead of the one being written


def read_chunk(registry: Registry, entry: FileEntry, index: int, where: str) -> bytes:
    """One verified chunk of a file; DigestMismatchError names the file."""
    key = entry.chunks[index]
    if entry.pack is not None:
        return packs.read_span(registry.store, key, entry.pack, entry.size, where)
    data = registry.get_blob(key)
    check_stored(registry.store, data, key, entry.chunk_span(index)[1], where)
    return data


@functools.cache
def zero_chunk_key() -> str:
    """The key of a whole chunk (CHUNK_SIZE bytes) of zeros: a hole of a sparse file."""
    return xxhash.xxh3_128_hexdigest(bytes(CHUNK_SIZE))


def _read_chunk_into(registry: Registry, entry: FileEntry, index: int, where: str, buf: memoryview) -> memoryview:
    """Like read_chunk, but a local store's blob is read into `buf`."""
    key = entry.chunks[index]
    length = entry.chunk_span(index)[1]
    bkey = blob_key(key)
    path = registry.store.local_path(bkey)
    if path is None or entry.pack is not None:
        return memoryview(read_chunk(registry, entry, index, where))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ObjectNotFound(f"object {bkey} not found in {registry.store.url}") from None
    try:
        if os.fstat(fd).st_size != length:
            raise damaged_blob(registry.store, key, length, where)
        view = buf[:length]
        n = read_full(fd, view)
    finally:
        os.close(fd)
    check_stored(registry.store, view[:n], key, length, where)
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
        if not fd_matches(fd, entry):
            return False
        if entry.mtime_ns is not None and st.st_mtime_ns != entry.mtime_ns:
            os.utime(fd, ns=(st.st_atime_ns, entry.mtime_ns))
        return True
    finally:
        os.close(fd)


def _temp_name() -> str:
    return f".artifactfs-{uuid.uuid4().hex}"


def _file_into(registry: Registry, dir_fd: int, name: str, path: str, where: str, entry: FileEntry,
               progress: Progress | None, run: _Run) -> None:
    """Write one verified file as `name` in dir_fd, atomically (temp file, then rename)."""
    if _existing_matches(dir_fd, name, where, entry):
        if progress:
            progress(entry.size)
        return
    tmp = _temp_name()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o755 if entry.executable else 0o644, dir_fd=dir_fd)
    try:
        run.begin(dir_fd, tmp)
        holes = False
        for view in _pieces(registry, entry, path):
            run.check()
            if view is None:  # a chunk of zeros: left a hole, as `cp --sparse=auto` does
                os.lseek(fd, CHUNK_SIZE, os.SEEK_CUR)
                holes = True
            else:
                write_full(fd, view)
            if progress:
                progress(CHUNK_SIZE if view is None else len(view))
        if holes:
            os.ftruncate(fd, entry.size)  # (a hole at the end has no bytes written after it)
        if entry.mtime_ns is not None:
            os.utime(fd, ns=(time.time_ns(), entry.mtime_ns))
        os.close(fd)
        fd = -1
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):  # the interrupted waiter may have removed it
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    finally:
        run.end(dir_fd, tmp)


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


def _download_into(registry: Registry, dir_fd: int, t: _Target, where: str, progress: Progress | None,
                   run: _Run) -> None:
    """One entry into dir_fd; an OSError on our side names the local path `where`."""
    if run.stopped:
        return
    try:
        if isinstance(t.entry, SymlinkEntry):
            _link_into(dir_fd, t.name, where, t.entry)
        else:
            _file_into(registry, dir_fd, t.name, t.path, where, t.entry, progress, run)
    except OSError as e:
        raise LocalFileError("write", where, e) from None


class _Stopped(Exception):
    """Internal: the download was interrupted; a worker drops its temporary file."""


class _Run:
    """What the workers of one download share with the thread that waits for them:
    whether to go on, and the temporary files being written, so that an
    interrupted download can remove them itself (Ctrl-C twice, or `timeout`, which
    signals the process and its group, interrupts the wait for the workers too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._temporaries: set[tuple[int, str]] = set()
        self.stopped = False

    def begin(self, dir_fd: int, name: str) -> None:
        """A worker made temporary file `name`; _Stopped if the download is over."""
        with self._lock:
            if self.stopped:
                raise _Stopped
            self._temporaries.add((dir_fd, name))

    def end(self, dir_fd: int, name: str) -> None:
        with self._lock:
            self._temporaries.discard((dir_fd, name))

    def check(self) -> None:
        if self.stopped:
            raise _Stopped

    def stop(self) -> None:
        """Stop the workers at their next chunk and remove every temporary file now
        (a worker goes on writing to its open descriptor, not to a name)."""
        with self._lock:
            self.stopped = True
        while True:  # one at a time: called again after an interruption, it goes on where it was
            with self._lock:
                if not self._temporaries:
                    return
                dir_fd, name = next(iter(self._temporaries))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
            self.end(dir_fd, name)


def _stop_workers(futures: list[Future], run: _Run) -> None:
    """After an interruption of the thread that submits and waits (Ctrl-C is a
    KeyboardInterrupt there): the temporary files go first, then the workers get
    the time to stop, so nothing half-written stays even if a second interruption
    (`timeout` signals twice, a user presses Ctrl-C again) cuts this wait short."""
    while True:
        try:
            run.stop()
            break
        except BaseException:  # interrupted again: remove the files first
            continue
    for f in futures:
        f.cancel()
    wait(futures)


def _pieces(registry: Registry, entry: FileEntry, path: str) -> Iterator[memoryview | bytes | None]:
    """The verified bytes of a file, piece by piece: its blobs, or for a reference
    the bytes at its URI (references.pieces checks them).  None stands for a whole
    chunk of zeros, known by its key alone: nothing is read for it."""
    if entry.ref is not None:
        yield from references.pieces(entry)
        return
    chunks = entry.chunks
    zeros = zero_chunk_key()
    registry.store.prefetch([blob_key(k) for k in chunks[1:1 + PREFETCH] if k != zeros])
    for i in range(len(chunks)):
        if i + PREFETCH < len(chunks) and chunks[i + PREFETCH] != zeros:  # one more ahead for each one taken
            registry.store.prefetch([blob_key(chunks[i + PREFETCH])])
        if chunks[i] == zeros:
            yield None
            continue
        try:
            view = _read_chunk_into(registry, entry, i, path, chunk_buffer())
        except OSError as e:
            raise StoreError(f"cannot read {shown(path)} from the store {registry.store.url}: "
                             f"{e.strerror}") from None
        yield view


@dataclass(frozen=True)
class _Target:
    """One entry to write: its name in its folder, its path below root, the entry."""

    name: str
    path: str
    entry: Leaf


def _by_directory(items: Iterable[tuple[str, Entry]]) -> dict[str, list[_Target]]:
    """folder below root ('' for root) -> its targets, every path checked first; an
    empty folder entry is a folder without targets."""
    out: dict[str, list[_Target]] = {}
    for path, entry in items:
        check_path(path)
        if isinstance(entry, DirEntry):
            out.setdefault(path, [])
            continue
        d, _, name = path.rpartition("/")
        out.setdefault(d, []).append(_Target(name, path, entry))
    return out


def _first_path(d: str, targets: list[_Target]) -> str:
    """A path below root to name in messages about folder d."""
    return targets[0].path if targets else d


def _lstat(root_fd: int, path: str) -> os.stat_result | None:
    try:
        return os.stat(path, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _refuse_obstacles(root_fd: int, root: str, groups: dict[str, list[_Target]]) -> None:
    """Before anything is written: LocalFileError if a symlink or file stands where
    a folder must be, a folder where a file or symlink must be, or a symlink where
    a file must be (the writes refuse them too, but would stop halfway).  Folders
    are checked parent first, so no symlink is followed on the way."""
    folders_ok: set[str] = set()
    for d, targets in groups.items():
        parts = d.split("/") if d else []
        exists = True
        for i in range(len(parts)):
            prefix = "/".join(parts[:i + 1])
            if prefix in folders_ok:
                continue
            st = _lstat(root_fd, prefix)
            if st is None:
                exists = False
                break
            if not stat.S_ISDIR(st.st_mode):
                raise LocalFileError("write", os.path.join(root, _first_path(d, targets)),
                                     f"{shown(prefix)} is not a directory (symlink or file in the way)")
            folders_ok.add(prefix)
        for t in targets if exists else ():
            st = _lstat(root_fd, t.path)
            if st is not None and (stat.S_ISDIR(st.st_mode) or
                                   (stat.S_ISLNK(st.st_mode) and isinstance(t.entry, FileEntry))):
                raise LocalFileError("write", os.path.join(root, t.path), "a symlink or directory is in the way")


def _batches(keys: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(keys), n):
        yield keys[i:i + n]


def download_many(registry: Registry, root: str, items: list[tuple[str, Entry]],
                  progress: Progress | None = None) -> None:
    """Write verified files, symlinks and empty folders into root, in parallel, never leaving
    root: every directory is opened once with O_NOFOLLOW (made if missing), and
    entries are created relative to that fd.  LocalFileError names a local
    path that could not be written; what was written before stays whole."""
    groups = _by_directory(items)
    try:
        os.makedirs(root, exist_ok=True)
        root_fd = os.open(os.path.realpath(root), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise LocalFileError("write", root, e) from None
    run = _Run()
    try:
        _refuse_obstacles(root_fd, root, groups)
        with ThreadPoolExecutor(WORKERS) as pool:
            for batch in _batches(sorted(groups), DIR_BATCH):
                fds: dict[str, int] = {}
                futures: list[Future] = []
                try:
                    for d in batch:  # in sorted order, so parents are made before children
                        where = os.path.join(root, _first_path(d, groups[d]))
                        try:
                            fds[d] = _open_dir(root_fd, d.split("/") if d else [], where)
                        except OSError as e:
                            raise LocalFileError("write", os.path.join(root, d), e) from None
                    for d in batch:
                        for t in groups[d]:
                            futures.append(pool.submit(_download_into, registry, fds[d], t,
                                                       os.path.join(root, t.path), progress, run))
                    wait(futures)  # every worker is done with the fds before they are closed
                except BaseException:
                    _stop_workers(futures, run)
                    raise
                finally:
                    for fd in fds.values():
                        os.close(fd)
                for f in futures:
                    f.result()
    finally:
        os.close(root_fd)
