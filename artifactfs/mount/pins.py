"""A running mount pins the versions its drafts are based on, so that `gc` keeps
them even after they are deleted (docs/store-format.md 5.5): the root trees of
the drafts' bases are written to pins/<host>-<pid>-<random>.json at start, when
they change (checked every CHECK_EVERY seconds) and at least every REFRESH_EVERY
seconds; the pin is removed at unmount.  gc ignores a pin older than an hour."""
from __future__ import annotations

import logging
import socket
import time
import uuid

import pyfuse3
import trio

from ..errors import ArtifactfsError
from ..registry.gcstate import drop_pin, write_pin
from .draftroot import DraftRootNode
from .parts import MountParts

log = logging.getLogger("artifactfs.mount")
CHECK_EVERY = 5.0
REFRESH_EVERY = 600.0


def install(parts: MountParts) -> None:
    """Pin the bases of the drafts of a writable mount (call after draftroot.install)."""
    ctx, root = parts.ctx, parts.table[pyfuse3.ROOT_INODE]
    if not isinstance(root, DraftRootNode):
        return  # read-only: no drafts
    drafts = root.drafts
    pin_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
    pinned: set[str] = set()
    written = 0.0

    async def keep() -> None:
        nonlocal pinned, written
        while True:
            roots = {root for live in list(drafts.live.values()) if (root := live.draft.state.base_root) is not None}
            if roots != pinned or time.monotonic() - written > REFRESH_EVERY:
                try:
                    await ctx.run(write_pin, ctx.registry.store, pin_id, roots)
                    pinned, written = roots, time.monotonic()
                except (ArtifactfsError, OSError) as e:
                    log.warning("could not pin the drafts' bases: %s", e)
            await trio.sleep(CHECK_EVERY)

    async def unpin() -> None:
        try:
            await ctx.run(drop_pin, ctx.registry.store, pin_id)
        except (ArtifactfsError, OSError) as e:
            log.warning("could not remove this mount's pin: %s", e)

    parts.services.append(keep)
    parts.shutdown_hooks.append(unpin)
