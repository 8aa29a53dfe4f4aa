"""One careful way to write a new file, shared by the store and the draft state."""
from __future__ import annotations

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
