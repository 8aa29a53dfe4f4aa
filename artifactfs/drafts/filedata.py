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
a few thousand files into a copy: the commit then needs not read it again.
Such a file past its first chunk is kept as one file per chunk where that lets
the chunks become blobs of a local store without a copy (datafiles.py)."""
from __future__ import annotations

import errno
import os

from ..chunks.digests import RunningDigest
from ..registry.manifest import CHUNK_SIZE
from . import datafiles
from .datafiles import make_anew, open_own, unlink_quiet
from .engine import Draft
from .inode import Attr, Inode

DIGESTS_KEPT = 50_000  # staged files kept in memory for their running digest until the commit (~2 KB each)


def attributes(draft: Draft, ino: Inode) -> Attr:
    """What stat(2) shows of an inode: a staged file's size, blocks, atime and
    mtime are its data file's, its ctime the later of the two."""
    if ino.is_reg and ino.staged:
        try:
            st = stat_data(draft, ino)
            return Attr(ino.mode, ino.nlink, ino.uid, ino.gid, 0, st.st_size, st.st_blocks, st.st_atime_ns,
                        st.st_mtime_ns, max(ino.ctime, st.st_ctime_ns))
        except FileNotFoundError:
            pass  # given back after a commit meanwhile: the base shows the same bytes
    return shown(ino)


def stat_data(draft: Draft, ino: Inode) -> datafiles.DataStat:
    """The data of a staged inode (FileNotFoundError: given back); a sealed file's
    under its lock, so that no seal or join moves its pieces meanwhile."""
    if not ino.sealed:
        try:
            return datafiles.data_stat(draft, ino)
        except FileNotFoundError:
            if not ino.sealed:
                raise  # (else sealed meanwhile)
    with ino.lock:
        return datafiles.data_stat(draft, ino)


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
    if ino.sealed:
        with ino.lock:
            if ino.sealed:
                return datafiles.read_sealed(draft, ino, off, size)
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
        running = ino.running
        in_order = running is not None and off == running.size
        if ino.sealed and not in_order:
            datafiles.join(draft, ino)  # (the write below ends the running digest)
        if in_order and (ino.sealed or (draft.seal_chunks and off <= CHUNK_SIZE < off + len(data))):
            done = datafiles.append_sealing(draft, ino, data)
            if len(draft.digesting) < DIGESTS_KEPT:
                draft.digesting[ino.id] = ino
            return done
        fd, size = open_own(draft.data_path(ino))
        try:
            if ino.running is None and off == 0 and size == 0:
                ino.running = RunningDigest()
            view, done = memoryview(data), 0
            try:
                while done < len(view):
                    done += os.pwrite(fd, view[done:], off + done)
            except OSError as e:
                if not datafiles.short_write(e, done):
                    ino.running = None
                    raise
            except BaseException:
                ino.running = None
                raise
            if ino.running is not None and not ino.running.add(off, view[:done]):
                ino.running = None
            if ino.running is not None and len(draft.digesting) < DIGESTS_KEPT:
                draft.digesting[ino.id] = ino  # (the kernel may forget it before the commit)
            return done
        finally:
            os.close(fd)


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

        def fill(fd: int) -> tuple[int, int]:
            if keep and ino.base is not None:
                draft.fetch(ino.base, fd)
            return ino.atime, ino.mtime
        make_anew(final, fill)
        ino.running = None if keep and ino.base is not None and ino.base.size else RunningDigest()
        try:
            with draft.change(ino):
                ino.staged, ino.base = True, None
                draft.db.put(ino.row())
        except BaseException:
            unlink_quiet(final)
            raise


def truncate(draft: Draft, ino: Inode, size: int) -> None:
    stage(draft, ino, keep=size > 0)
    draft.mark_dirty()
    with ino.lock:
        if ino.sealed and ino.running is not None and size in (0, ino.running.size):
            if size:
                return  # (the size it has)
            fd = os.open(draft.data_path(ino), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)  # one empty data file again; the pieces go (datafiles.py)
            datafiles.remove_pieces(draft.data_path(ino), ino.sealed)
            datafiles.set_sealed(draft, ino, 0)
            ino.running = RunningDigest()
            return
        if ino.sealed:
            datafiles.join(draft, ino)
        fd, _ = open_own(draft.data_path(ino))
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
        with ino.lock:
            path = draft.data_path(ino)
            if ino.sealed:  # a sealed file's times are its tail's
                path = datafiles.tail_path(path)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns if atime is None else atime,
                               st.st_mtime_ns if mtime is None else mtime))
        draft.set_attrs(ino)
    else:
        draft.set_attrs(ino, atime=atime, mtime=mtime)


def fsync(draft: Draft, ino: Inode, datasync: bool) -> None:
    """The inode's bytes and the draft's namespace, durable."""
    if ino.staged:
        datafiles.fsync_all(draft, ino, datasync)
    draft.db.sync()

