"""Where a staged file's bytes are on disk: one data file, or, for a big file
written in order, files of one chunk each (issue 10).

A chunk goes into a local store on the staging filesystem by link(2) of a file
holding exactly its bytes (LocalStore.put_file).  So while a file is written in
order from its first byte (its running digest follows it, chunks/digests.py)
and sealing is on (Draft.seal_chunks: a local store on this filesystem), a
write that goes past a full data file first *seals* it: renames it to
`<id>.c<k>`, never to change again, and the writes go on into the *tail*
`<id>.t`.  The mount links each sealed chunk into the store while the file is
still written (tostore.store_ahead), so each byte is written once into the
page cache and once to disk, instead of being copied into the store as well.

In the draft's data/ folder:

    <id>                       one data file (every file that was never sealed)
    <id>.c0 ... <id>.c<n-1>    sealed: bytes [k * CHUNK_SIZE, (k + 1) * CHUNK_SIZE)
    <id>.t                     the tail: the bytes from n * CHUNK_SIZE on (missing: none)

`<id>` present means one data file (pieces beside it are left over from a join
cut short); absent with pieces, the file is sealed.  Every step from one state
to the next is one rename, so a killed daemon leaves a whole file either way.
Sealed files exist only while their running digest does (Inode.sealed counts
the sealed chunks): any other change (a write elsewhere, a truncate to another
size) first joins the pieces into one data file again, a copy, and so does the
next start of the daemon (rejoin), which has no running digests.

Callers hold the inode's lock for anything that changes the pieces."""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..fileio import copy_range
from ..registry.manifest import CHUNK_SIZE
from .inode import Inode

TMP_SUFFIX = ".tmp"
TAIL_SUFFIX = ".t"
_PIECE = re.compile(r"^(\d+)\.(?:c(\d+)|t)$")


class Draft(Protocol):
    """What this module needs of a draft (engine.Draft): its data/ folder, and
    the sealed files' inodes, held so that what Inode.sealed says outlives the
    kernel forgetting them (a new Inode object would say 0)."""

    data: str
    sealed_files: dict[int, Inode]

    def data_path(self, ino: Inode) -> str: ...


@dataclass(frozen=True)
class DataStat:
    """What a staged file's data shows, named as in os.stat_result: the inode
    number, times and link count are the data file's (when sealed, the tail's,
    or the last chunk's when there is no tail)."""

    st_ino: int
    st_size: int
    st_blocks: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_nlink: int

    @classmethod
    def of(cls, st: os.stat_result, size: int, blocks: int) -> "DataStat":
        return cls(st.st_ino, size, blocks, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)


@dataclass(frozen=True)
class Piece:
    """Bytes [offset, offset + length) of the file `path`."""

    path: str
    offset: int
    length: int


def chunk_path(whole: str, k: int) -> str:
    return f"{whole}.c{k}"


def tail_path(whole: str) -> str:
    return whole + TAIL_SUFFIX


def data_stat(draft: Draft, ino: Inode) -> DataStat:
    """The data's stat; FileNotFoundError when the inode has none (given back)."""
    whole, n = draft.data_path(ino), ino.sealed
    if not n:
        st = os.stat(whole)
        return DataStat.of(st, st.st_size, st.st_blocks)
    try:
        st = os.stat(tail_path(whole))
        tail, blocks = st.st_size, st.st_blocks
    except FileNotFoundError:
        st, tail, blocks = os.stat(chunk_path(whole, n - 1)), 0, 0
    return DataStat.of(st, n * CHUNK_SIZE + tail, n * CHUNK_SIZE // 512 + blocks)


def pieces(draft: Draft, ino: Inode, size: int) -> list[Piece]:
    """The file's consecutive CHUNK_SIZE pieces of `size` bytes, where they are."""
    whole, n = draft.data_path(ino), ino.sealed
    out = [Piece(chunk_path(whole, k), 0, CHUNK_SIZE) for k in range(n)]
    out += [Piece(whole if not n else tail_path(whole), off - n * CHUNK_SIZE, min(CHUNK_SIZE, size - off))
            for off in range(n * CHUNK_SIZE, size, CHUNK_SIZE)]
    return out


def read_sealed(draft: Draft, ino: Inode, off: int, size: int) -> bytes:
    """`size` bytes at `off` of a sealed file (fewer at its end)."""
    whole, n, out = draft.data_path(ino), ino.sealed, []
    while size > 0:
        k = off // CHUNK_SIZE
        if k < n:
            path, at, room = chunk_path(whole, k), off - k * CHUNK_SIZE, CHUNK_SIZE - off % CHUNK_SIZE
        else:
            path, at, room = tail_path(whole), off - n * CHUNK_SIZE, size
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            break  # no tail: the end of the file
        try:
            got = os.pread(fd, min(size, room), at)
        finally:
            os.close(fd)
        out.append(got)
        if not got or k >= n:
            break
        off, size = off + len(got), size - len(got)
    return b"".join(out)


def open_own(path: str, create: bool = False) -> tuple[int, int]:
    """The data file (or tail) opened for writing (fd, size in bytes), never
    shared: a data file a commit made into a blob of a local store (a hard link,
    tostore.py) is copied first, and the copy renamed over it, so a blob never
    changes.  `create`: a missing file is made empty."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    st = os.fstat(fd)
    if st.st_nlink <= 1:
        return fd, st.st_size
    tmp = path + TMP_SUFFIX
    try:
        new = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if copy_range(fd, new, 0, st.st_size) != st.st_size:
                raise OSError(errno.EIO, "a data file shrank while it was copied")
            os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, path)
        except BaseException:
            os.close(new)
            unlink_quiet(tmp)
            raise
    finally:
        os.close(fd)
    return new, st.st_size


def append_sealing(draft: Draft, ino: Inode, data: bytes) -> int:
    """Write `data` at the end of a file written in order (ino.running follows
    it), sealing each full chunk first; the running digest takes exactly the
    bytes written, also when a write fails half-way.  Returns the bytes written."""
    running = ino.running
    assert running is not None
    view, done, whole = memoryview(data), 0, draft.data_path(ino)
    while done < len(view):
        start = ino.sealed * CHUNK_SIZE  # where the data file (or the tail) begins
        if running.size - start >= CHUNK_SIZE:
            os.rename(whole if not ino.sealed else tail_path(whole), chunk_path(whole, ino.sealed))
            set_sealed(draft, ino, ino.sealed + 1)
            continue
        part = view[done:done + start + CHUNK_SIZE - running.size]
        fd, _ = open_own(whole if not ino.sealed else tail_path(whole), create=bool(ino.sealed))
        try:
            n = os.pwrite(fd, part, running.size - start)
        except OSError as e:
            if short_write(e, done):
                return done
            raise
        finally:
            os.close(fd)
        running.add(running.size, part[:n])
        done += n
    return done


def short_write(e: OSError, done: int) -> bool:
    """A full disk (or quota) after `done` > 0 bytes of a write: answer them, as
    write(2) does, rather than the error (POSIX; the writer then learns how much
    landed, and gets ENOSPC at its next write)."""
    return done > 0 and e.errno in (errno.ENOSPC, errno.EDQUOT)


def join(draft: Draft, ino: Inode) -> None:
    """One data file again from the pieces of a sealed file (a copy)."""
    join_files(draft.data_path(ino), ino.sealed)
    set_sealed(draft, ino, 0)


def set_sealed(draft: Draft, ino: Inode, n: int) -> None:
    """Record that `n` chunks of the inode are sealed (0: one data file or none)."""
    ino.sealed = n
    if n:
        draft.sealed_files[ino.id] = ino
    else:
        draft.sealed_files.pop(ino.id, None)


def join_files(whole: str, n: int) -> None:
    """Copy chunks 0..n-1 and the tail of `whole` into `whole` (then the pieces go);
    its times are the tail's (or the last chunk's)."""
    def fill(fd: int) -> tuple[int, int] | None:
        for k in range(n):
            _copy_all(chunk_path(whole, k), fd, k * CHUNK_SIZE)
        times = os.stat(chunk_path(whole, n - 1)) if n else None
        try:
            _copy_all(tail_path(whole), fd, n * CHUNK_SIZE)
            times = os.stat(tail_path(whole))
        except FileNotFoundError:
            pass
        return None if times is None else (times.st_atime_ns, times.st_mtime_ns)
    make_anew(whole, fill)
    remove_pieces(whole, n)


def make_anew(final: str, fill: Callable[[int], tuple[int, int] | None]) -> None:
    """Replace `final` by a new file that fill(fd) writes, with the (atime, mtime)
    it returns, by rename(2) of a temporary file: on any error nothing changes."""
    tmp = final + TMP_SUFFIX
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            times = fill(fd)
            if times is not None:
                os.utime(fd, ns=times)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        unlink_quiet(tmp)
        raise


def _copy_all(path: str, dst: int, at: int) -> None:
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        if copy_range(src, dst, 0, size, at) != size:
            raise OSError(errno.EIO, f"{path} shrank while it was copied")
    finally:
        os.close(src)


def remove_data(draft: Draft, ino: Inode) -> None:
    """Remove the inode's data file, or all its pieces."""
    unlink_quiet(draft.data_path(ino))
    remove_pieces(draft.data_path(ino), ino.sealed)
    set_sealed(draft, ino, 0)


def remove_pieces(whole: str, n: int) -> None:
    for k in range(n):
        unlink_quiet(chunk_path(whole, k))
    unlink_quiet(tail_path(whole))


def rejoin(data_dir: str, staged: set[int]) -> None:
    """After a restart: each sealed file of a staged inode made one data file again
    (the running digests it needs are gone); pieces beside a data file dropped."""
    found: dict[int, int] = {}
    for name in os.listdir(data_dir):
        m = _PIECE.match(name)
        if m and int(m[1]) in staged:
            found[int(m[1])] = max(found.get(int(m[1]), 0), int(m[2]) + 1 if m[2] is not None else 0)
    for i, n in found.items():
        whole = os.path.join(data_dir, str(i))
        if os.path.exists(whole):
            remove_pieces(whole, n)
        else:
            join_files(whole, n)


def fsync_all(draft: Draft, ino: Inode, datasync: bool) -> None:
    """fsync the data file, or every piece of a sealed file and the data folder."""
    whole, n = draft.data_path(ino), ino.sealed
    for path in [whole] if not n else [chunk_path(whole, k) for k in range(n)] + [tail_path(whole), draft.data]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            (os.fdatasync if datasync and path != draft.data else os.fsync)(fd)
        finally:
            os.close(fd)


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
