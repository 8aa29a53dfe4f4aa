"""The bytes of a draft's regular files, by inode: data/<id> once staged,
otherwise the base file the inode shows (Inode.base, read by the caller from
the store or its cache).

Nothing here depends on an open file: every call opens the data file for the
time of one system call, so reads and writes work the same whether the kernel
sent open(2)/release(2) or not, and an inode whose names are all gone keeps its
bytes until it is forgotten.  Each write reaches the data file before it
returns, so a killed process loses nothing a writer had written; fsync also
syncs meta.db, for a power cut.

A file written in order is hashed as it is written (Inode.running), and its
inode is kept in memory until the next commit (Draft.digesting, up to
DIGESTS_KEPT files), also when the kernel forgets it meanwhile, which it does
a few thousand files into a copy: the commit then needs not read it again."""
from __future__ import annotations

import errno
import os

from ..chunks.digests import RunningDigest
from ..fileio import copy_range
from .engine import Draft
from .inode import Attr, Inode

TMP_SUFFIX = ".tmp"
DIGESTS_KEPT = 50_000  # staged files kept in memory for their running digest until the commit (~2 KB each)


def attributes(draft: Draft, ino: Inode) -> Attr:
    """What stat(2) shows of an inode: a staged file's size, blocks, atime and
    mtime are its data file's, its ctime the later of the two."""
    if ino.is_reg and ino.staged:
        try:
            st = os.stat(draft.data_path(ino))
            return Attr(ino.mode, ino.nlink, ino.uid, ino.gid, 0, st.st_size, st.st_blocks, st.st_atime_ns,
                        st.st_mtime_ns, max(ino.ctime, st.st_ctime_ns))
        except FileNotFoundError:
            pass  # given back after a commit meanwhile: the base shows the same bytes
    return shown(ino)


def shown(ino: Inode) -> Attr:
    """The attributes of an inode whose bytes are not in a data file."""
    size = 0
    if ino.base is not None:
        size = ino.base.size
    elif ino.target is not None:
        size = len(ino.target.encode("utf-8", "surrogateescape"))
    return Attr(ino.mode, ino.nlink, ino.uid, ino.gid, ino.rdev, size, (size + 511) // 512, ino.atime,
                ino.mtime, ino.ctime)


def read(draft: Draft, ino: Inode, off: int, size: int) -> bytes | None:
    """`size` bytes at `off`, or None when the inode is not staged (read its base)."""
    if not ino.staged:
        return None
    try:
        fd = os.open(draft.data_path(ino), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # given back after a commit meanwhile: the base has the same bytes
    try:
        return os.pread(fd, size, off)
    finally:
        os.close(fd)


def write(draft: Draft, ino: Inode, off: int, data: bytes) -> int:
    """pwrite(2) into the inode, copying its base bytes up first.  Writes to one
    inode are serialized (its lock), so that the running digest sees them in the
    order the data file does."""
    stage(draft, ino, keep=True)
    draft.mark_dirty()
    with ino.lock:
        fd, size = _open_own(draft, ino)
        try:
            if ino.running is None and off == 0 and size == 0:
                ino.running = RunningDigest()
            view, done = memoryview(data), 0
            try:
                while done < len(view):
                    done += os.pwrite(fd, view[done:], off + done)
            except BaseException:
                ino.running = None
                raise
            if ino.running is not None and not ino.running.add(off, view):
                ino.running = None
            if ino.running is not None and len(draft.digesting) < DIGESTS_KEPT:
                draft.digesting[ino.id] = ino  # (the kernel may forget it before the commit)
            return done
        finally:
            os.close(fd)


def _open_own(draft: Draft, ino: Inode) -> tuple[int, int]:
    """The data file opened for writing (fd, size in bytes), never shared: a data
    file a commit made into a blob of a local store (a hard link, tostore.py) is
    copied first, and the copy renamed over it, so a blob never changes (called
    under ino.lock)."""
    path = draft.data_path(ino)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
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
            _unlink_quiet(tmp)
            raise
    finally:
        os.close(fd)
    return new, st.st_size


def stage(draft: Draft, ino: Inode, keep: bool) -> None:
    """Give a regular file its own data file (copy-up): the base bytes are fetched
    unless `keep` is False (O_TRUNC, truncate to 0).  On any error (ENOSPC, an
    unreachable store) the inode shows its base as before."""
    if not ino.is_reg:
        raise OSError(errno.EISDIR if ino.is_dir else errno.EINVAL, "not a regular file")
    if ino.staged:
        return
    with ino.lock:
        if ino.staged:
            return
        with draft.change(ino):
            draft.materialize(ino)
        final = draft.data_path(ino)
        tmp = final + TMP_SUFFIX
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                if keep and ino.base is not None:
                    draft.fetch(ino.base, fd)
                os.utime(fd, ns=(ino.atime, ino.mtime))
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        ino.running = None if keep and ino.base is not None and ino.base.size else RunningDigest()
        try:
            with draft.change(ino):
                ino.staged, ino.base = True, None
                draft.db.put(ino.row())
        except BaseException:
            _unlink_quiet(final)
            raise


def truncate(draft: Draft, ino: Inode, size: int) -> None:
    stage(draft, ino, keep=size > 0)
    draft.mark_dirty()
    with ino.lock:
        fd, _ = _open_own(draft, ino)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        running = ino.running
        if size == 0:
            ino.running = RunningDigest()
        elif running is None or running.size != size:
            ino.running = None


def set_times(draft: Draft, ino: Inode, atime: int | None, mtime: int | None) -> None:
    """utimensat(2): None leaves a time as it is (UTIME_OMIT); ctime moves to now."""
    if ino.staged:
        path = draft.data_path(ino)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns if atime is None else atime, st.st_mtime_ns if mtime is None else mtime))
        draft.set_attrs(ino)
    else:
        draft.set_attrs(ino, atime=atime, mtime=mtime)


def fsync(draft: Draft, ino: Inode, datasync: bool) -> None:
    """The inode's bytes and the draft's namespace, durable."""
    if ino.staged:
        try:
            fd = os.open(draft.data_path(ino), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                (os.fdatasync if datasync else os.fsync)(fd)
            finally:
                os.close(fd)
    draft.db.sync()


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
