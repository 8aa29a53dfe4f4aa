"""The parts of one mount, made by daemon.build before the mount serves, which
extensions (draftroot: writable drafts, lineage: recorded uses, pins: the
drafts' bases kept from gc) plug into: node kinds in the inode table, hooks on
Operations, tasks that run while the mount serves, and hooks run at unmount."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .context import MountContext
from .inodes import InodeTable
from .ops import Operations
from .options import MountOptions

Hook = Callable[[], Awaitable[None]]


@dataclass
class MountParts:
    opts: MountOptions
    ctx: MountContext
    table: InodeTable
    ops: Operations
    services: list[Hook] = field(default_factory=list)  # run while the mount serves, cancelled when it ends
    shutdown_hooks: list[Hook] = field(default_factory=list)  # awaited in order after the FUSE session ends
    notes: list[str] = field(default_factory=list)  # lines `artifactfs mount` prints once the mount is live
