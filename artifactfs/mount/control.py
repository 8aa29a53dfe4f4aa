"""How `artifactfs sync` reaches the daemon: a Unix stream socket in the private
state dir (0700; the socket itself 0600, and the peer's uid is checked), whose
address the daemon shows as the xattr user.artifactfs.control on the mount root.
One JSON request line, one JSON reply line:

  {"op": "sync", "collections": ["a", "b"] | null (every dirty draft),
   "aliases": [...], "tags": [...], "description": str | null, "metadata": {...},
   "unmount": bool (umount's commit: drafts recovered after a crash wait for an explicit sync),
   "wait": seconds (how long files of a draft being written may take to be closed, openwrites.py)}
  -> {"results": [{"collection": "a", "line": "a:v3"} | {"collection": "b", "error": "..."}
                  | {"collection": "c", "skipped": "..."} (a recovered draft, when every draft was asked)]}

Before the reply, lines {"progress": "..."} may come (what a sync waits for).
The reply is sent only once every version is durable in the store."""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

import trio
import xxhash

from ..drafts.commit import CommitResult
from ..drafts.slots import set_aside_drafts
from ..drafts.status import paths_of
from ..drafts.syncclient import peer_uid, sockaddr
from ..errors import ArtifactfsError, InvalidNameError, NotFoundError
from ..paths import state_dir
from ..registry.names import check_alias
from .livedraft import Drafts, LiveDraft
from .openwrites import BeingWritten, shown_paths
from .state import host_key

log = logging.getLogger("artifactfs.mount")
XATTR = "user.artifactfs.control"
MAX_REQUEST = 1 << 20
WRITERS_POLL = 0.05  # s: how often a commit looks whether the draft's writers have closed their files
SUN_PATH_MAX = 107
Say = Callable[[str], Awaitable[None]]


async def _silent(text: str) -> None:
    pass


def control_address(mountpoint: str) -> str:
    """A socket path under the state dir; if that path is too long, '@name' (a
    Linux abstract socket) with a random name: abstract names have no owner or
    mode, so a predictable one could be bound first by any local user (the mount
    would fail, or a fake daemon would answer).  Clients read the address from
    the root's xattr, so nothing needs to guess it."""
    key = xxhash.xxh3_64_hexdigest(f"{host_key()}\0{os.path.realpath(mountpoint)}".encode())
    d = os.path.join(state_dir(), "control")
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, f"{key}.sock")
    return path if len(os.fsencode(path)) <= SUN_PATH_MAX else f"@artifactfs-{os.getuid()}-{secrets.token_hex(16)}"


class ControlServer:
    def __init__(self, drafts: Drafts, address: str, mountpoint: str):
        self.drafts = drafts
        self.address = address
        self.mountpoint = mountpoint

    async def serve(self) -> None:
        """Listen until cancelled (the daemon's nursery ends at unmount)."""
        if not self.address.startswith("@") and os.path.lexists(self.address):
            os.unlink(self.address)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(sockaddr(self.address))
        if not self.address.startswith("@"):
            os.chmod(self.address, 0o600)
        sock.listen(16)
        try:
            await trio.serve_listeners(self._handle, [trio.SocketListener(sock)])
        finally:
            self.close()

    def close(self) -> None:
        if not self.address.startswith("@"):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One request, one answer.  A client that goes away (Ctrl-C, a timeout)
        costs it the answer, nothing else: what was committed stays committed and
        the mount goes on serving."""
        async with stream:
            if peer_uid(stream.socket) not in (os.getuid(), 0):
                return
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk

                async def say(text: str) -> None:
                    try:
                        await stream.send_all(json.dumps({"progress": text}).encode() + b"\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the client left: the commit goes on
                try:
                    reply = await self.dispatch(json.loads(data), say)
                except (ValueError, KeyError, TypeError, AttributeError) as e:  # raised before any commit
                    reply = {"error": f"bad request: {e}"}
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                log.info("a sync client left before its answer (%s)", e)

    async def dispatch(self, req: dict, say: Say = _silent) -> dict:
        op, names = req.get("op"), req.get("collections")
        if op == "discard":
            return {"results": [await self._one(name, "discard", self._discard) for name in names]}
        if op not in ("sync", "status"):
            return {"error": f"unknown request {op!r}"}
        every, unmount = names is None, bool(req.get("unmount"))
        if names is None:
            names = [n for n, live in sorted(self.drafts.live.items()) if await live.has_changes()]
        if op == "status":
            results = [await self._one(name, "status", self._status) for name in names]
            aside = await self.drafts.ctx.run(set_aside_drafts, self.drafts.dir, None if every else names)
            return {"results": results + [{"collection": a.collection, "line": (
                f"{a.collection}: a draft set aside, {a.why}: its work is in {a.path}/files "
                f"(rm -r {a.path} when done with it)")} for a in aside]}
        attrs = {"aliases": list(req.get("aliases") or ()), "tags": list(req.get("tags") or ()),
                 "description": req.get("description"), "metadata": dict(req.get("metadata") or {})}
        try:  # every alias fits every collection, or nothing is committed (not one draft of two)
            for name in names:
                for alias in attrs["aliases"]:
                    check_alias(alias, name)
        except InvalidNameError as e:
            return {"error": f"nothing committed: {e}"}

        if unmount:
            self.drafts.unmounting = True
        wait = float(req.get("wait") or 0)
        deadline = trio.current_time() + wait  # (one for the whole request: N drafts do not wait N times)

        async def commit(name: str) -> dict:
            live = await self._existing(name)
            why = live.recovered
            if why and unmount:  # (an explicit sync commits it)
                raise ArtifactfsError(f"{name}: not committed: {why}")
            if why and every:  # a cron job's `sync MOUNTPOINT` must not publish a half-written file
                draft = os.path.join(self.mountpoint, name, "draft")
                return {"skipped": f"{name}: skipped, not published by a sync of the whole mount: {why} "
                                   f"(`artifactfs sync {draft}` publishes it, `artifactfs discard {draft}` "
                                   "drops its changes)"}
            result = await self._commit_closed(live, wait, deadline, unmount, attrs, say)
            return {"line": result.line, "note": result.note}

        return {"results": [await self._one(name, "sync", commit) for name in names]}

    async def _commit_closed(self, live: LiveDraft, wait: float, deadline: float, unmount: bool, attrs: dict,
                             say: Say) -> CommitResult:
        """Commit the draft once none of its files is being written (openwrites.py),
        waiting until `deadline` (trio's clock; `wait` s after the request came)
        for them to be closed (a checkpoint still being saved), said once through
        `say`; ArtifactfsError naming them if some stay open (nothing is published)."""
        told = False
        while True:
            writing = self.drafts.writes(live.name).changed
            if writing and not told and trio.current_time() < deadline:
                told = True
                paths = await live.read(paths_of, live.draft, writing)
                await say(f"{live.name}: waiting up to {wait:g} s for {len(paths)} file(s) open for writing to be "
                          f"closed: {shown_paths(paths)}")
            with trio.move_on_at(deadline):
                while self.drafts.writes(live.name).changed:
                    await trio.sleep(WRITERS_POLL)
            writing = self.drafts.writes(live.name).changed
            if not writing:
                try:
                    return await live.commit(lambda: self.drafts.writes(live.name).changed, **attrs)
                except BeingWritten:  # opened and written again meanwhile
                    writing = self.drafts.writes(live.name).changed
                    if trio.current_time() < deadline or not writing:
                        continue
            paths = await live.read(paths_of, live.draft, writing)
            then = ("the daemon commits the draft as it stops if they are closed by then (see its log), else "
                    "keeps it for an explicit sync") if unmount else "nothing was published, the draft is kept"
            raise ArtifactfsError(f"{live.name}: not committed{' yet' * unmount}: {len(paths)} file(s) still open "
                                  f"for writing after {wait:g} s: {shown_paths(paths)}; {then}")

    async def _status(self, name: str) -> dict:
        live = await self._existing(name)
        lines = [await live.status()]
        writes = self.drafts.writes(name)
        if writes.changed:
            paths = await live.read(paths_of, live.draft, writes.changed)
            lines.append(f"being written (sync waits for them to be closed): {shown_paths(paths, 20)}")
        if writes.unchanged:
            paths = await live.read(paths_of, live.draft, writes.unchanged)
            lines.append(f"open for writing, unchanged since opened (sync publishes them as they are): "
                         f"{shown_paths(paths, 20)}")
        return {"line": "\n".join(lines)}

    async def _discard(self, name: str) -> dict:
        return {"line": await (await self._existing(name)).discard_changes()}

    async def _one(self, name: str, what: str, do: Callable[[str], Awaitable[dict]]) -> dict:
        """One collection's part of a request: {"collection", "line"[, "note"]} or
        {"collection", "error"}: one failing draft does not stop the others."""
        try:
            return {"collection": name, **await do(name)}
        except ArtifactfsError as e:  # a conflict, an unreachable store ...
            text = str(e) if str(e).startswith(f"{name}:") else f"{name}: {e}"
            log.error("%s of %s failed: %s", what, name, e)
            return {"collection": name, "error": text}
        except OSError as e:
            log.exception("%s of %s failed", what, name)
            return {"collection": name, "error": f"{name}: {e.strerror or e}"}
        except Exception:  # a bug: its traceback goes to the log, and the mount goes on serving
            log.exception("%s of %s failed", what, name)
            return {"collection": name, "error": f"{name}: internal error (the mount's log has the traceback); "
                                                 "the draft is kept"}

    async def _existing(self, name: str) -> LiveDraft:
        if name not in self.drafts.live:
            ctx = self.drafts.ctx
            if name not in {c.name for c in await ctx.run(ctx.registry.collections, ctx.project)}:
                raise NotFoundError(f"{name}: no such collection or draft")
        return await self.drafts.get(name)
