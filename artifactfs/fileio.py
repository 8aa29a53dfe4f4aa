"""Careful ways to write a new file, shared by the store and the draft state."""
from __future__ import annotations

import errno
import os


def write_new(path: str, data: bytes, mode: int, fsync: bool) -> None:
    """Create `path` (it must not exist) holding `data`, fsync'd if asked; on any
    error nothing is left behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def copy_range(src: int, dst: int, offset: int, length: int, at: int = 0) -> int:
    """Copy up to `length` bytes of fd `src` from `offset` to fd `dst` at offset
    `at` inside the kernel (copy_file_range(2): no user-space buffer; a reflink
    where the filesystem shares extents); read/write where the kernel refuses
    (another filesystem type, an old kernel).  Returns the bytes copied: fewer
    than `length` only at the end of the source."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, offset + done, at + done)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = _copy_by_hand(src, dst, offset + done, at + done, length - done)
        if n == 0:
            break
        done += n
    return done


def _copy_by_hand(src: int, dst: int, src_off: int, dst_off: int, length: int) -> int:
    data = os.pread(src, min(length, 1 << 20), src_off)
    view = memoryview(data)
    while view:
        n = os.pwrite(dst, view, dst_off)
        view, dst_off = view[n:], dst_off + n
    return len(data)
