"""What drafts add to the mount's top levels, and how they are plugged in.

  MOUNTPOINT/NAME          `mkdir` makes a new collection (its draft only, until the
                           first commit); its type is --default-type or the xattr
                           user.artifact.type set on the folder
  <c>/draft/               DraftNode (draftnodes.py)
  <c>/<c>:ALIAS            `ln -s <c>:vN <c>:ALIAS` (also `ln -sfn`, which makes a
                           temporary link and renames it) sets an alias;
                           `rm <c>:ALIAS` removes it; `latest` is EPERM

install() swaps these node kinds into a Daemon, starts the control socket with
the daemon, and commits every dirty draft when the daemon stops."""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence

import pyfuse3

from ..drafts import filedata
from ..drafts.inode import Inode
from ..errors import CorruptStoreError
from ..registry.checks import skip_entry
from ..registry.names import check_alias, check_name, parse_version
from ..registry.versions import CollectionInfo, VersionInfo
from ..timestamps import now_iso
from .context import MountContext
from .control import XATTR, ControlServer, control_address
from .draftnodes import DraftHandle, DraftNode
from .errnos import fuse_error
from .inodes import InodeTable, Key, Node, SymlinkNode
from .livedraft import Drafts, LiveDraft
from .nodes import PLAIN, CollectionKept, CollectionNode, RootNode, VersionRootNode
from .openwrites import OpenWrites
from .parts import MountParts
from .state import write_outcome

log = logging.getLogger("artifactfs.mount")
DRAFT = "draft"
TYPE_XATTR = "user.artifact.type"


def _drafts(table: InodeTable) -> Drafts:
    root = table[pyfuse3.ROOT_INODE]
    assert isinstance(root, DraftRootNode)
    return root.drafts


class DraftRootNode(RootNode):
    drafts: Drafts
    control: str

    async def lookup(self, name: str) -> Node:
        try:
            return await super().lookup(name)
        except pyfuse3.FUSEError as e:
            if e.errno != errno.ENOENT or name not in self.drafts.unborn():
                raise
            return self._unborn(name)

    async def children(self) -> Sequence[tuple[str, Node]]:
        out = dict(await super().children())
        for name in self.drafts.unborn():
            out.setdefault(name, self._unborn(name))
        return sorted(out.items())

    def _unborn(self, name: str) -> Node:
        live = self.drafts.live.get(name)
        type_ = live.draft.state.type if live is not None else self.drafts.default_type  # (not opened yet)
        return self._child(CollectionInfo(self.ctx.project, name, type_, None, now_iso()))

    async def mkdir(self, name: str, mode: int) -> Node:
        check_name(name, "collection name")
        if name in await self.collections(0) or name in self.drafts.live:
            raise fuse_error(errno.EEXIST)
        await self.drafts.get(name)
        return self._unborn(name)

    async def rmdir(self, name: str) -> None:
        """Only a new collection whose draft is still empty can be removed."""
        if name in await self.collections(0):
            raise fuse_error(errno.EPERM)
        live = self.drafts.live.get(name)
        if live is None:
            raise fuse_error(errno.ENOENT)
        if await live.has_changes():
            raise fuse_error(errno.ENOTEMPTY)
        await self.drafts.discard(name)

    async def xattrs(self) -> dict[str, bytes]:
        return {**await super().xattrs(), XATTR: self.control.encode()}

    async def statfs(self) -> pyfuse3.StatvfsData:
        """The space of the filesystem holding the drafts' staging trees, where
        writes into draft/ go (df, and tools that check free space before copying)."""
        st = await self.ctx.run(os.statvfs, self.drafts.dir)
        s = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                     "f_favail", "f_namemax"):
            setattr(s, name, getattr(st, name))
        return s


class DraftCollectionNode(CollectionNode):
    """A collection with its draft folder and writable alias links."""

    def __init__(self, ctx: MountContext, key: Key, info: CollectionInfo, kept: CollectionKept):
        super().__init__(ctx, key, info, kept)
        self.pending: dict[str, str] = {}  # links being made by `ln -sfn`: name -> target

    async def _draft(self) -> DraftNode:
        """The draft folder, made from what the collection listing has seen (so it
        stays listable while the store is unreachable)."""
        versions = (await self.state()).versions
        latest = max(versions) if versions else None
        drafts = _drafts(self.table)
        live = drafts.live.get(self.name)
        if live is None:
            live = await drafts.get(self.name, self.info.type, None if latest is None else await self._version(latest))
        await live.follow(latest, self._version)
        root = live.draft.root
        attr = await live.read(filedata.attributes, live.draft, root)
        node = self.table.make("draft", ("draft", self.name, str(root.token)), live, root, attr)
        assert isinstance(node, DraftNode)
        node.attr = attr
        return node

    async def _version(self, n: int) -> VersionInfo:
        """A version's record, as the version folder keeps it (no store access once seen)."""
        node = self._child(f"{self.name}:v{n}", await self.state())
        if not isinstance(node, VersionRootNode):
            raise fuse_error(errno.ENOENT)
        return await node.load()

    async def lookup(self, name: str) -> Node:
        if name == DRAFT and not self.info.portfolio:  # a portfolio holds links, not drafts
            return await self._draft()
        if name in self.pending:
            return self.table.make("link", ("link", self.name, name), self.pending[name])
        return await super().lookup(name)

    async def children(self) -> Sequence[tuple[str, Node]]:
        drafts = []
        if not self.info.portfolio:
            try:
                drafts = [(DRAFT, await self._draft())]
            except CorruptStoreError as e:  # its base's record is damaged: the versions still list
                skip_entry(f"{self.ctx.project}/{self.name}/{DRAFT}", str(e))
        return [*drafts, *await super().children()]

    # -- aliases as symlinks -------------------------------------------------------------
    def _spelling(self, name: str) -> tuple[str, str] | None:
        """(separator, what follows it) for `NAME:x` or `NAME@x`, else None."""
        for sep in (":", PLAIN):
            prefix, found, rest = name.partition(sep)
            if prefix == self.name and found:
                return sep, rest
        return None

    def _alias_of(self, name: str) -> str | None:
        spelled = self._spelling(name)
        return spelled[1] if spelled is not None and parse_version(spelled[1]) is None else None

    async def _set_alias(self, alias: str, name: str, target: str, replace: bool) -> Node:
        """Point `alias` at the version `target` names (NAME:vN, NAME@vN, or an alias of
        either spelling); the node of link `name`, in the spelling `name` uses."""
        if alias == "latest":
            raise fuse_error(errno.EPERM)
        check_alias(alias)
        spelled = self._spelling(target.rstrip("/"))
        if spelled is None:
            raise fuse_error(errno.EINVAL)  # an alias points at a version of its own collection
        ref = spelled[1]
        reg, project = self.ctx.registry, self.ctx.project
        if not replace and alias in (await self.state(0)).aliases:
            raise fuse_error(errno.EEXIST)
        version = await self.ctx.run(reg.resolve, project, self.name, ref)
        await self.ctx.run(reg.set_alias, project, self.name, alias, version)
        node = self._child(name, await self.state(0))
        if node is None:  # removed again meanwhile by another writer
            raise fuse_error(errno.ENOENT)
        return node

    async def symlink(self, name: str, target: str) -> Node:
        alias = self._alias_of(name)
        if alias is not None:
            return await self._set_alias(alias, name, target, replace=False)
        if ":" in name or self._spelling(name) is not None or name == DRAFT or name in self.pending:
            raise fuse_error(errno.EEXIST if name == DRAFT or name in self.pending else errno.EPERM)
        self.pending[name] = target
        return self.table.make("link", ("link", self.name, name), target)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        alias = self._alias_of(new_name)
        if name not in self.pending or new_parent is not self or alias is None:
            raise fuse_error(errno.EPERM)
        await self._set_alias(alias, new_name, self.pending[name], replace=not flags & pyfuse3.RENAME_NOREPLACE)
        del self.pending[name]

    async def unlink(self, name: str) -> None:
        if self.pending.pop(name, None) is not None:
            return
        alias = self._alias_of(name)
        if alias == "latest" or alias is None:
            raise fuse_error(errno.EPERM if alias == "latest" or self._spelling(name) is not None
                             else errno.ENOENT)
        await self.ctx.run(self.ctx.registry.set_alias, self.ctx.project, self.name, alias, None)
        await self.state(0)

    # -- the type of a collection not committed yet ---------------------------------------
    async def xattrs(self) -> dict[str, bytes]:
        out = await super().xattrs()
        live = _drafts(self.table).live.get(self.name)
        if live is not None and live.draft.state.base is None:
            out[TYPE_XATTR] = live.draft.state.type.encode()
        return out

    async def setxattr(self, name: str, value: bytes) -> None:
        if name != TYPE_XATTR:
            raise fuse_error(errno.ENOTSUP)
        await (await self._draft()).set_type(value.decode())


def install(parts: MountParts, default_type: str) -> None:
    """Make the mount writable through drafts."""
    ctx, table = parts.ctx, parts.table
    drafts = Drafts(ctx, default_type)
    parts.notes.extend(drafts.notes)
    table.kinds.update(root=DraftRootNode, collection=DraftCollectionNode, draft=DraftNode,
                       link=SymlinkNode)  # link: the temporary symlink `ln -sfn` makes before its rename
    root = DraftRootNode(ctx, ("root",))
    root.drafts = drafts
    drafts.writes = lambda name: open_writes(drafts.live[name].writers()) if name in drafts.live else OpenWrites()
    root.control = control_address(parts.opts.mountpoint)
    table.set_root(root)
    server = ControlServer(drafts, root.control, parts.opts.mountpoint)

    async def invalidate(changed: list[Inode], names: Sequence[tuple[Inode, str]], live: LiveDraft,
                         in_request: bool) -> None:
        """After a commit, a discard or a move to another writer's version: show the
        new version at once, drop cached pages of draft files whose content moved
        with the base (another writer's files) and the kernel's dentries of `names`
        that went; an inode left without a name that the kernel does not hold goes
        now (else when it is forgotten).  `in_request`: called while answering a
        LOOKUP in the collection's folder, whose lock the kernel holds until we
        reply, so the alias dentries are dropped without waiting (waiting for the
        kernel to drop them there deadlocks the folder)."""
        node_of = {id(n.inode): n.ino for n in table.nodes() if isinstance(n, DraftNode) and n.live is live} \
            if changed or names else {}  # (a sync with no change walks no table: the 100,000-file case)
        inodes = [node_of[id(ino)] for ino in changed if id(ino) in node_of]
        orphans = [ino for ino in changed if ino.nlink <= 0 and id(ino) not in node_of]
        for folder, name in names:
            if id(folder) in node_of:
                pyfuse3.invalidate_entry_async(node_of[id(folder)], os.fsencode(name), ignore_enoent=True)
        await root.collections(0)
        kept = root.kept.get(live.name)
        if kept is not None:  # also when the kernel forgot the collection's folder meanwhile (its next
            await kept.state.get(0)  # lookup makes a node on this state, and NAME:vN must be there)
        coll = table.find(("coll", live.name))
        if isinstance(coll, CollectionNode):
            await coll.state(float("inf") if kept is not None else 0)
            if in_request:
                for name in coll.alias_entries():
                    pyfuse3.invalidate_entry_async(coll.ino, name, ignore_enoent=True)
            else:  # before sync's reply: its caller's next readlink of NAME:latest must see the new version
                await ctx.run(_invalidate_entries, coll.ino, coll.alias_entries())
        if inodes:
            await ctx.run(_invalidate, inodes)  # one worker-thread trip for all of them
        if orphans:
            await live.forget(orphans)

    def watch(live: LiveDraft) -> None:
        live.on_advance.append(lambda changed, names, in_request: invalidate(changed, names, live, in_request))

    drafts.on_new.append(watch)
    for live in drafts.live.values():
        watch(live)

    async def commit_at_exit() -> None:
        server.close()
        results = await drafts.commit_dirty()
        lines = [r.get("line") or r["error"] for r in results]
        log.info("at unmount: %s", "; ".join(lines) if lines else "no draft had changes")
        try:
            write_outcome(parts.opts.mountpoint, os.getpid(), results)  # (umount reports it)
        except OSError as e:
            log.warning("could not leave what became of the drafts for umount: %s", e)
        drafts.close()

    parts.services.append(server.serve)
    parts.shutdown_hooks.append(commit_at_exit)


def open_writes(handles: list[DraftHandle]) -> OpenWrites:
    """The files of a draft open for writing through `handles`, each inode once (openwrites.py)."""
    changed: dict[int, Inode] = {}
    opened: dict[int, Inode] = {}
    for h in handles:
        if h.node.inode.nlink > 0:
            (changed if h.being_written else opened)[id(h.node.inode)] = h.node.inode
    return OpenWrites(list(changed.values()), [ino for key, ino in opened.items() if key not in changed])


def _invalidate_entries(folder: int, names: list[bytes]) -> None:
    """Drop the kernel's dentries `names` of a folder, waiting until it has (a worker thread)."""
    for name in names:
        try:
            pyfuse3.invalidate_entry(folder, name)
        except OSError:
            pass  # the kernel holds no such entry, or the session has ended


def _invalidate(inodes: list[int]) -> None:
    """Drop the kernel's cached attributes and pages of these inodes."""
    for ino in inodes:
        try:
            pyfuse3.invalidate_inode(ino, False)
        except OSError:
            pass  # the kernel no longer knows it, or the session has ended
