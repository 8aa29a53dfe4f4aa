"""What every node of one mount shares: the registry and project, the chunk
reader (and the native reads beside it), the worker threads for blocking calls (threads.py), the refresh period,
and who made the request being served.  Nothing here knows node kinds: the
inode table (inodes.py) holds the nodes, each node holds this context."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from ..registry.versions import Registry
from .nativereads import NativeReads
from .reader import ChunkReader
from .threads import Threads

T = TypeVar("T")
# The owner (uid and gid) of version files with --no-opens: (uid_t) -1, which maps to
# no user, so CAP_DAC_OVERRIDE does not apply to them (Linux's capable_wrt_inode_uidgid)
# and even root's open for writing is refused, by the kernel, as their 0444 mode
# refuses everyone else's; stat() shows the overflow uid and gid (65534, `nobody`).
NO_OWNER = 0xFFFFFFFF
CALLER: ContextVar[tuple[int, int]] = ContextVar("CALLER")


def caller() -> tuple[int, int]:
    """(uid, gid) of the process whose request is being served (ops.py sets it;
    a trio task per request keeps it apart from others); ours outside requests."""
    found = CALLER.get(None)  # (a default argument would make two system calls on every call)
    return found if found is not None else (os.getuid(), os.getgid())


@dataclass
class MountContext:
    registry: Registry
    project: str
    reader: ChunkReader
    threads: Threads
    native: NativeReads | None = None  # version files read by pyfuse3's native threads (nativereads.py)
    refresh: float = 5.0  # seconds a listing of collections, versions or aliases is shown before re-reading it
    cache_size: int = 0  # the on-disk cache's limit in bytes, reported by statfs
    unowned_files: bool = False  # version files owned by NO_OWNER (--no-opens: noopen.py)
    trees_loaded: int = 0  # directory objects read by version folders (shown in the stats xattr)
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    started_ns: int = field(default_factory=time.time_ns)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in one of the mount's worker threads (Threads.run)."""
        return await self.threads.run(fn, *args)
