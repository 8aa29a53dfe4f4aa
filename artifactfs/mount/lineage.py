"""Lineage seen by the mount, with no change to the programs.

The first time a process (the FUSE request's pid) opens a file of a version, a
use is queued: its run record is read from /proc at that moment, while the
process waits in open(2) (a few small in-memory reads, once per process and
version; nothing at all on read(2)).  A background task writes the queued uses
in a worker thread every FLUSH_EVERY seconds and at unmount: one store write per
process and version, never one per read.

A process that opens a file of a collection's draft/ for writing is remembered
as that draft's writer; the next commit of the draft (sync or unmount) records
it as the producer (Registry.producer) instead of the mount daemon."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import trio

from ..api.lineage import record_use
from ..errors import ArtifactfsError
from ..registry.runinfo import RunRecord, process_run
from .context import MountContext
from .inodes import Node
from .nodes import VersionDirNode, VersionFileNode
from .parts import MountParts

log = logging.getLogger("artifactfs.mount")
FLUSH_EVERY = 1.0
MAX_SEEN = 100_000  # (pid, version) pairs remembered; beyond, the set starts over


@dataclass
class PendingUse:
    collection: str
    version: int
    run: RunRecord
    path: str


class UseRecorder:
    def __init__(self, ctx: MountContext):
        self.ctx = ctx
        self.seen: set[tuple[int, str, int]] = set()
        self.pending: list[PendingUse] = []
        self.writers: dict[str, RunRecord] = {}  # draft collection -> the run of its last writer
        self.own_pid = os.getpid()  # (not a getpid(2) per created file)

    def opened(self, node: Node, pid: int, flags: int) -> None:
        """An open(2) or create(2) answered for process `pid` (called on the trio loop,
        or, for a file created in a draft, in pyfuse3's reader thread: syncops.py;
        that case only reads and sets one key of `writers`); when the kernel sends
        no OPEN, a lookup (a file), a listing (O_DIRECTORY) or a truncation instead
        (ops.py)."""
        if pid <= 0 or pid == self.own_pid:
            return
        if isinstance(node, VersionFileNode) or (  # a listed folder, when OPEN is not sent (noopen.py)
                isinstance(node, VersionDirNode) and node.ref is not None and flags & os.O_DIRECTORY):
            key = (pid, node.ref.collection, node.ref.version)
            if key in self.seen:
                return
            if len(self.seen) >= MAX_SEEN:
                self.seen.clear()
            self.seen.add(key)
            run = process_run(pid)
            if run is not None:
                self.pending.append(PendingUse(node.ref.collection, node.ref.version, run, node.key[3]))
        elif node.key[0] == "draft" and flags & os.O_ACCMODE != os.O_RDONLY:
            name = node.key[1]
            writer = self.writers.get(name)
            if writer is None or writer.pid != pid:
                run = process_run(pid)
                if run is not None:
                    self.writers[name] = run

    def producer(self, project: str, name: str) -> dict | None:
        """Registry.producer: the last writer of the draft being committed (worker thread)."""
        found = self.writers.get(name) if project == self.ctx.project else None
        return found.to_json() if found else None

    def _write(self, batch: list[PendingUse]) -> None:
        reg = self.ctx.registry
        for use in batch:
            try:
                info = reg.version(self.ctx.project, use.collection, use.version, aliases={})
                record_use(reg, info, use.run, "mount", use.path)
            except (ArtifactfsError, OSError) as e:
                log.warning("could not record the use of %s:v%d by pid %d: %s",
                            use.collection, use.version, use.run.pid, e)

    async def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            await self.ctx.run(self._write, batch)

    async def serve(self) -> None:
        while True:
            await trio.sleep(FLUSH_EVERY)
            await self.flush()


def install(parts: MountParts) -> None:
    """Record uses and draft writers through this mount."""
    recorder = UseRecorder(parts.ctx)
    parts.ops.on_open.append(recorder.opened)
    parts.ctx.registry.producer = recorder.producer
    parts.services.append(recorder.serve)
    parts.shutdown_hooks.insert(0, recorder.flush)
