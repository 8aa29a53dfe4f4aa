"""The base class of open files: what ops.py keeps under a file handle (fh)
from open/create until release.  Handles that read version contents are in
reader.py and refreader.py, the draft files' in draftnodes.py."""
from __future__ import annotations

import errno

from .errnos import fuse_error


class Handle:
    """An open file.  Requests a handle kind does not support answer EBADF."""

    keep_cache = False  # may the kernel keep cached pages across opens?
    immutable = False  # bytes that never change: one handle may serve every handle-less read (noopen.py)
    direct_io = False

    async def read(self, off: int, size: int) -> bytes | memoryview:
        """Up to `size` bytes at offset `off` (fewer only at the end of the file)."""
        raise fuse_error(errno.EBADF)

    async def write(self, off: int, buf: bytes) -> int:
        """Write `buf` at offset `off`; the number of bytes written."""
        raise fuse_error(errno.EBADF)

    def write_now(self, off: int, buf: bytes) -> int | None:
        """write() in the calling thread, which is not the trio loop (syncops.py):
        the bytes written, or None to have it go the trio way."""
        return None

    releases_anywhere = False  # release() does nothing: RELEASE may be answered in any thread (syncops.py)

    async def fsync(self, datasync: bool) -> None:
        pass

    async def release(self) -> None:
        pass
