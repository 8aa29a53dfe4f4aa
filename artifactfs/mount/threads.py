"""The one pool of worker threads of a mount.

Every blocking call the daemon makes (store and cache reads, chunk fetches,
draft engine calls, disk and kernel calls that may wait) runs in a worker
thread through `Threads.run`, never on the trio loop, and every such thread is
counted by one CapacityLimiter sized by the mount option `--threads`
(MountOptions.threads).  The one exception is pagecache.PageFeeder's own
thread: its stores wait for the loop, so they must not hold a pool thread.

Outside the pool, the patched pyfuse3 (third_party/pyfuse3) reads /dev/fuse in
native threads, which answer IOCTLs, security.* GETXATTRs, pinned GETATTRs and READs of
registered files (nativereads.py) themselves ("native_answers" in stats), and one more native
thread reads registered folders ahead.  Those reader threads also run syncops.py's handler
(draft WRITEs among others: "sync_answers"), at most 4 at a time, outside the pool."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pyfuse3
import trio

T = TypeVar("T")

# FUSE opcodes (linux/fuse.h) by number, for the request counts of the stats xattr
OPCODES = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK", 8: "MKNOD",
           9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK", 14: "OPEN", 15: "READ",
           16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR", 22: "GETXATTR",
           23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR", 28: "READDIR",
           29: "RELEASEDIR", 30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW", 34: "ACCESS",
           35: "CREATE", 36: "INTERRUPT", 37: "BMAP", 38: "DESTROY", 39: "IOCTL", 40: "POLL",
           42: "BATCH_FORGET", 43: "FALLOCATE", 44: "READDIRPLUS", 45: "RENAME2", 46: "LSEEK",
           47: "COPY_FILE_RANGE", 50: "SYNCFS", 51: "TMPFILE", 52: "STATX"}


def request_counts() -> dict[str, dict[str, int]]:
    """{"OPEN": {"native": n, "python": m}, ...}: the requests read from /dev/fuse by
    this process, by FUSE opcode and by who answered them (the patched pyfuse3's
    native reader threads, or Python); {} with a stock pyfuse3 (the stats xattr:
    how many round trips an `open()` costs, and of which kind)."""
    counts = getattr(pyfuse3, "fastpath_request_counts", None)
    if counts is None:
        return {}
    return {OPCODES.get(op, f"op{op}"): {"native": int(here), "python": int(py)}
            for op, (here, py) in counts().items()}


class Threads:
    """Worker threads for blocking calls, at most `size` at a time."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a mount needs at least one worker thread, not {size}")
        self.limiter = trio.CapacityLimiter(size)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in a worker thread (waiting for a free one); its result or exception."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def stats(self) -> dict[str, int]:
        """Threads busy now, callers waiting for one, the requests the native
        reader thread answered without Python, and the inodes whose attributes it
        holds pinned and the slots of its table for them, and of its answers those a
        synchronous Python handler gave in the reader threads (syncops.py) (0 with a
        stock pyfuse3), and every request by opcode (request_counts) (the stats xattr)."""
        answered = getattr(pyfuse3, "fastpath_answered", None)
        pins = getattr(pyfuse3, "fastpath_pins", None)
        pinned, slots = pins() if pins is not None else (0, 0)
        sync = getattr(pyfuse3, "fastpath_sync_stats", None)
        calls, declined = sync() if sync is not None else (0, 0)
        return {"threads": int(self.limiter.total_tokens), "threads_busy": self.limiter.borrowed_tokens,
                "threads_waiting": self.limiter.statistics().tasks_waiting,
                "native_answers": int(answered()) if answered is not None else 0,
                "attrs_pinned": int(pinned), "attr_pin_slots": int(slots),
                "sync_answers": int(calls - declined), "requests": request_counts()}
