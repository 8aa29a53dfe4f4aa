"""What every node of one mount shares: the registry, the reader, the inode
table, the options, and the one way to run blocking calls (a worker thread
under a capacity limiter, never on the trio loop)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..registry.versions import Registry
from .inodes import InodeTable, Node
from .reader import ChunkReader

T = TypeVar("T")
THREADS = 16
CALLER: ContextVar[tuple[int, int]] = ContextVar("CALLER")


def caller() -> tuple[int, int]:
    """(uid, gid) of the process whose request is being served (ops.py sets it;
    a trio task per request keeps it apart from others); ours outside requests."""
    return CALLER.get((os.getuid(), os.getgid()))


@dataclass
class MountContext:
    registry: Registry
    project: str
    reader: ChunkReader
    refresh: float = 5.0
    cache_size: int = 0  # the on-disk cache's limit, reported by statfs
    trees_loaded: int = 0  # directory objects read by version folders (shown in the stats xattr)
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    started_ns: int = field(default_factory=time.time_ns)
    table: InodeTable = field(default_factory=InodeTable)
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(THREADS))
    # Node class per kind ("root", "collection", "version", "dir", "file", "alias"):
    # the drafts layer swaps in subclasses here before the mount starts.
    node_classes: dict[str, type[Node]] = field(default_factory=dict)

    # State that outlives node objects (the kernel forgets nodes; listings and version
    # records seen last must survive, e.g. to be shown while the store is unreachable).
    # One entry per collection and per version looked at.
    kept: dict[tuple[str, ...], Any] = field(default_factory=dict)
    # Called as hook(node, pid, flags) after each open/create is answered (lineage.py).
    on_open: list[Callable[[Node, int, int], None]] = field(default_factory=list)

    def keep(self, key: tuple[str, ...], make: Callable[[], T]) -> T:
        """The value kept under `key`, made on first use."""
        if key not in self.kept:
            self.kept[key] = make()
        return self.kept[key]

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a worker thread."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def make(self, kind: str, key: tuple[str, ...], *args: Any) -> Node:
        """The live node for `key`, created as node_classes[kind](ctx, key, *args)."""
        cls = self.node_classes[kind]
        return self.table.node(key, lambda: cls(self, key, *args))
