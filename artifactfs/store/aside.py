"""Setting a damaged object of a local store aside (ObjectStore.set_aside).

Content-addressed objects are never overwritten (a writer that finds the key
present stores nothing), so a blob whose bytes were damaged on disk would stay
damaged for every later put of the right bytes.  A reader that finds the damage
moves the file aside instead; the key is then free, and the next put or commit
of those bytes stores them again, repairing every version that uses them."""
from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable


def move_aside(path: str, aside: str, damaged: Callable[[bytes], bool]) -> bool:
    """Rename the file at `path` to `aside` (its folders made) if `damaged(its
    bytes)`; True if it was moved.  A file a writer put at `path` meanwhile
    (the right bytes, after another reader moved the damaged one) is put back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        chunks = []
        while block := os.read(fd, 1 << 20):
            chunks.append(block)
    finally:
        os.close(fd)
    if not damaged(b"".join(chunks)):
        return False
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = os.lstat(aside)
    if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        os.unlink(aside)
        return False
    return True
