"""What uploads and downloads share: the worker count, the per-thread chunk
buffers (fresh 8 MiB objects cost page faults per chunk) and whole reads and
writes of a file descriptor."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

from ..registry.manifest import CHUNK_SIZE

WORKERS = 8
Progress = Callable[[int], None]
_tls = threading.local()


def chunk_buffer(slot: int = 0) -> memoryview:
    """This thread's reusable CHUNK_SIZE buffer number `slot` (0 or 1)."""
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = [None, None]
    if bufs[slot] is None:
        bufs[slot] = memoryview(bytearray(CHUNK_SIZE))
    return bufs[slot]


def read_full(fd: int, view: memoryview) -> int:
    """Fill `view` from fd (short only at end of file); bytes read."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def write_full(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
