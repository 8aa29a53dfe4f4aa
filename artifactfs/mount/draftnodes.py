"""`<collection>/draft/`: the writable folder of a collection.  One DraftNode per
inode of the draft engine (artifactfs.drafts), each request turned into the
matching engine call in a worker thread, its OSError errno passed back.

Nodes are keyed by the engine inode's token, so the kernel's inode is the
draft's inode: whatever happens to its names, an inode the kernel holds reads
and writes the same file.  Nothing lives in open file handles: reads, writes,
fsync and truncation go by inode, so they work when the kernel sends no
open/release, and an unlinked inode lives until the kernel forgets it."""
from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import stat
from collections.abc import Sequence

import pyfuse3

from ..drafts import filedata, frommemory
from ..drafts.engine import Draft
from ..drafts.inode import Attr, Inode
from ..errors import UsageError
from ..registry.checks import check_metadata
from ..registry.names import check_alias, check_name, check_type
from . import syncops
from .context import MountContext, caller
from .errnos import fuse_error
from .handles import Handle
from .inodes import SHORT_TIMEOUT, Node
from .livedraft import LiveDraft
from .reader import FileReader
from .refreader import ReferenceReader
from .xattrs import PREFIX, xattr_value

log = logging.getLogger("artifactfs.mount")
PENDING_ATTRS = ("description", "metadata", "aliases", "tags")
WRITE_BLOCK = 1024 * 1024
_CHANGES = itertools.count(1)  # orders opens for writing and changes of bytes (next() is one step: any thread)


def _parse_attr(key: str, value: bytes, collection: str) -> object:
    """An attribute for the next commit of `collection`, from its xattr bytes (EINVAL when invalid)."""
    text = value.decode(errors="strict")
    if key == "metadata":
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise UsageError("user.artifact.metadata must be a JSON object")
        return check_metadata(data)  # refused now (EINVAL), not at every later sync
    if key in ("aliases", "tags"):
        items = [p.strip() for p in text.split(",") if p.strip()]
        for item in items:
            if key == "aliases":
                check_alias(item, collection)
            else:
                check_name(item, "tag")
        return items
    return text


def _valid(name: str) -> str:
    """A new name must be UTF-8 (names are text in a version): EINVAL and one log line."""
    try:
        name.encode()
    except UnicodeEncodeError:
        log.warning("refused the name %r in a draft: not valid UTF-8", name)
        raise fuse_error(errno.EINVAL) from None
    return name


def _with_attr(draft: Draft, ino: Inode) -> tuple[Inode, Attr]:
    return ino, filedata.attributes(draft, ino)


def _lookup(draft: Draft, d: Inode, name: str) -> tuple[Inode, Attr]:
    return _with_attr(draft, draft.lookup(d, name))


def _listing(draft: Draft, d: Inode) -> list[tuple[str, Inode, Attr]]:
    return [(name, ino, filedata.attributes(draft, ino)) for name, ino in draft.readdir(d)]


def _make(draft: Draft, d: Inode, name: str, mode: int, rdev: int,
          target: str | None) -> tuple[Inode, Attr, Attr]:
    """The new inode and its attributes, and the folder's new attributes (one
    worker-thread trip per create: it counts when copying many small files)."""
    uid, gid = caller()
    ino = draft.make(d, name, mode, uid, gid, rdev, target)
    return ino, filedata.attributes(draft, ino), filedata.attributes(draft, d)


def _setattr(draft: Draft, ino: Inode, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields) -> Attr:
    if fields.update_size:
        filedata.truncate(draft, ino, attr.st_size)
    atime = attr.st_atime_ns if fields.update_atime else None
    mtime = attr.st_mtime_ns if fields.update_mtime else None
    if ino.staged and (atime is not None or mtime is not None):
        filedata.set_times(draft, ino, atime, mtime)
        atime = mtime = None
    draft.set_attrs(ino, mode=attr.st_mode if fields.update_mode else None,
                    uid=attr.st_uid if fields.update_uid else None, gid=attr.st_gid if fields.update_gid else None,
                    atime=atime, mtime=mtime)
    return filedata.attributes(draft, ino)


class DraftHandle(Handle):
    """An open draft file: everything goes to its inode (no state of its own).

    A file opened write-only (cp's, torch.save's and tar's new files) is opened
    with FOPEN_DIRECT_IO: the kernel hands the writer's own pages to the daemon
    instead of first copying them into the FUSE file's page cache, which cost
    the writer as much CPU as the daemon's whole write (docs/drafts.md).  Such a
    descriptor cannot be mmap'ed or read, and the kernel drops the cached pages
    a direct write covers, so readers through other descriptors stay coherent.
    Not for a set-user-ID or set-group-ID file: the kernel asks for those bits
    to be cleared after a direct write by a flag of the WRITE request
    (FUSE_WRITE_KILL_SUIDGID) that pyfuse3 does not pass on, while after a
    write through the page cache it clears them itself (a SETATTR).

    The kernel keeps a draft file's cached pages across opens (keep_cache):
    its bytes change only through this mount's kernel, or, when the draft
    follows a new base, with the pages dropped (draftroot.py), as when no
    OPEN is sent at all."""

    keep_cache = True

    def __init__(self, node: "DraftNode", flags: int):
        self.node = node
        self.writing = flags & os.O_ACCMODE != os.O_RDONLY
        self.opened = next(_CHANGES)
        if self.writing:
            node.live.opened(self)
        self.direct_io = flags & os.O_ACCMODE == os.O_WRONLY and not node.mode & (stat.S_ISUID | stat.S_ISGID)

    @property
    def being_written(self) -> bool:
        """Open for writing, and the file's bytes changed (created, truncated, written,
        also through a shared mmap's writeback) since this handle was opened: a commit
        waits for it to be closed (openwrites.py).  A handle that changed nothing
        does not hold a commit back."""
        return self.writing and self.node.changed > self.opened

    async def read(self, off: int, size: int) -> bytes | memoryview:
        return await self.node.read(off, size)

    async def write(self, off: int, buf: bytes) -> int:
        return await self.node.write(off, buf)

    async def fsync(self, datasync: bool) -> None:
        await self.node.fsync(datasync)

    def write_now(self, off: int, buf: bytes) -> int | None:
        self.node.changing()
        return self.node.live.write_now(self.node.inode, off, buf)

    releases_anywhere = True


def _created(node: "DraftNode", flags: int) -> tuple[Node, Handle]:
    """The handle of a file just made by CREATE: a new file is being written until closed."""
    handle = DraftHandle(node, flags)
    node.changing()
    return node, handle


class DraftNode(Node):
    """A file, folder, symlink or special file of a draft; key ("draft", collection, token)."""

    timeout = SHORT_TIMEOUT

    def __init__(self, ctx: "MountContext", key: tuple[str, ...], live: "LiveDraft", ino: Inode, attr: Attr):
        super().__init__(ctx, key)
        self.live = live
        self.inode = ino
        self.attr = attr
        self._reader: FileReader | ReferenceReader | None = None
        self.changed = 0  # when its bytes last changed through this mount (_CHANGES; DraftHandle.being_written)

    def changing(self) -> None:
        """Its bytes are about to change (before the change: a commit that looks
        in between waits for the writer, never misses it)."""
        self.changed = next(_CHANGES)

    @property
    def draft(self) -> Draft:
        return self.live.draft

    @property
    def mode(self) -> int:  # type: ignore[override]
        return self.attr.mode

    def attributes(self) -> pyfuse3.EntryAttributes:
        a, t = pyfuse3.EntryAttributes(), self.attr
        a.st_ino, a.st_mode, a.st_nlink, a.st_uid, a.st_gid = self.ino, t.mode, t.nlink, t.uid, t.gid
        a.st_rdev, a.st_size, a.st_blocks = t.rdev, t.size, t.blocks
        a.st_blksize = WRITE_BLOCK  # cp and friends then write in 1 MiB requests
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = t.atime, t.mtime, t.ctime
        a.entry_timeout = a.attr_timeout = self.timeout
        return a

    async def getattr(self) -> pyfuse3.EntryAttributes:
        attr = frommemory.attributes(self.draft, self.inode)  # a folder: no worker thread
        self.attr = attr or await self.live.read(filedata.attributes, self.draft, self.inode)
        return self.attributes()

    def attributes_now(self) -> pyfuse3.EntryAttributes | None:
        """From memory (a folder: the GETATTR after each create in it), or one
        stat(2) of an unsealed data file, as the worker thread of getattr() does."""
        ino = self.inode
        attr = frommemory.attributes(self.draft, ino)
        if attr is None and ino.is_reg and ino.staged and not ino.sealed:
            attr = filedata.attributes(self.draft, ino)
        if attr is None:
            return None
        self.attr = attr
        return self.attributes()

    def node_of(self, ino: Inode, attr: Attr) -> "DraftNode":
        key = ("draft", self.live.name, str(ino.token))
        node = self.table.make("draft", key, self.live, ino, attr)
        assert isinstance(node, DraftNode)
        if node.inode is not ino:  # its inode lost the name and a base entry shows there again (discard,
            self.table.detach(node)  # advance), with the same token: a new inode for the kernel too
            node = self.table.make("draft", key, self.live, ino, attr)
            assert isinstance(node, DraftNode)
        node.attr = attr
        return node

    def added(self) -> None:
        syncops.offer(self.ino, True)  # its requests may be answered in pyfuse3's reader threads

    def forgotten(self) -> None:
        """An inode with no name left goes when the kernel forgets it."""
        syncops.offer(self.ino, False)
        if self.inode.nlink <= 0 and self.ctx.reader.nursery is not None:
            self.ctx.reader.nursery.start_soon(self.live.forget, [self.inode])

    # -- folders -------------------------------------------------------------------
    async def lookup(self, name: str) -> Node:
        if self.absent_now(name):  # a new name (cp, tar): no worker thread
            raise fuse_error(errno.ENOENT)
        return self.node_of(*await self.live.read(_lookup, self.draft, self.inode, name))

    def absent_now(self, name: str) -> bool:
        return frommemory.surely_absent(self.draft, self.inode, name)

    async def children(self) -> Sequence[tuple[str, Node]]:
        found = await self.live.read(_listing, self.draft, self.inode)
        return [(name, self.node_of(ino, attr)) for name, ino, attr in found]

    async def _make(self, name: str, mode: int, rdev: int = 0, target: str | None = None) -> "DraftNode":
        ino, attr, self.attr = await self.live.change(_make, self.draft, self.inode, _valid(name), mode, rdev,
                                                      target)
        return self.node_of(ino, attr)

    def create_now(self, name: str, mode: int, flags: int) -> tuple[Node, Handle] | None:
        def make() -> tuple[Node, Handle]:  # (the handle too, while the gate holds a commit off: openwrites.py)
            ino, attr, self.attr = _make(self.draft, self.inode, _valid(name), stat.S_IFREG | (mode & 0o7777), 0,
                                         None)
            return _created(self.node_of(ino, attr), flags)
        return self.live.change_now(make)

    async def create(self, name: str, mode: int, flags: int) -> tuple[Node, Handle]:
        return _created(await self._make(name, stat.S_IFREG | (mode & 0o7777)), flags)

    async def mknod(self, name: str, mode: int, rdev: int) -> Node:
        return await self._make(name, mode, rdev)

    async def mkdir(self, name: str, mode: int) -> Node:
        return await self._make(name, stat.S_IFDIR | (mode & 0o7777))

    async def symlink(self, name: str, target: str) -> Node:
        return await self._make(name, stat.S_IFLNK | 0o777, target=target)

    async def link(self, target: Node, name: str) -> Node:
        if not isinstance(target, DraftNode) or target.live is not self.live:
            raise fuse_error(errno.EXDEV)
        await self.live.change(self.draft.link, target.inode, self.inode, _valid(name))
        await self.getattr()
        await target.getattr()
        return target

    async def unlink(self, name: str) -> None:
        await self.live.change(self.draft.unlink, self.inode, name, frees_space=True)

    async def rmdir(self, name: str) -> None:
        await self.live.change(self.draft.rmdir, self.inode, name, frees_space=True)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        if not isinstance(new_parent, DraftNode) or new_parent.live is not self.live:
            raise fuse_error(errno.EXDEV)
        await self.live.change(self.draft.rename, self.inode, name, new_parent.inode, _valid(new_name),
                               bool(flags & pyfuse3.RENAME_NOREPLACE), bool(flags & pyfuse3.RENAME_EXCHANGE),
                               frees_space=True)

    # -- files ---------------------------------------------------------------------
    async def open(self, flags: int) -> Handle:
        if self.inode.is_dir:
            raise fuse_error(errno.EISDIR)
        handle = DraftHandle(self, flags)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            self.changing()
            await self.live.change(filedata.truncate, self.draft, self.inode, 0, frees_space=True)
        return handle

    async def read(self, off: int, size: int) -> bytes | memoryview:
        while True:
            data = await self.live.read(filedata.read, self.draft, self.inode, off, size)
            if data is not None:
                return data
            entry = self.inode.base
            if entry is None:
                continue  # staged meanwhile: read the data file
            if self._reader is None or self._reader.entry is not entry:
                where = f"{self.live.name}/draft (inode {self.ino})"
                self._reader = (ReferenceReader(self.ctx, entry, where) if entry.ref is not None  # bytes at a URI
                                else FileReader(self.ctx.reader, entry, where))
            return await self._reader.read(off, size)

    async def write(self, off: int, buf: bytes) -> int:
        self.changing()
        return await self.live.write(self.inode, off, buf)

    async def fsync(self, datasync: bool) -> None:
        await self.live.read(filedata.fsync, self.draft, self.inode, datasync)

    async def readlink(self) -> str:
        if self.inode.target is None:
            raise fuse_error(errno.EINVAL)
        return self.inode.target

    async def setattr(self, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None) -> pyfuse3.EntryAttributes:
        if fields.update_size:
            self.changing()
        self.attr = await self.live.change(_setattr, self.draft, self.inode, attr, fields,
                                           frees_space=fields.update_size)
        return self.attributes()

    # -- attributes for the next commit (on the draft folder itself) -------------------
    @property
    def is_top(self) -> bool:
        return self.inode is self.draft.root

    async def xattrs(self) -> dict[str, bytes]:
        if not self.is_top:
            return {}
        state = self.draft.state
        out = {PREFIX + k: xattr_value(state.attrs[k]) for k in PENDING_ATTRS if k in state.attrs}
        out[PREFIX + "type"] = state.type.encode()
        out[PREFIX + "base"] = b"" if state.base is None else f"{self.live.name}:v{state.base}".encode()
        return out

    async def setxattr(self, name: str, value: bytes) -> None:
        key = name[len(PREFIX):] if name.startswith(PREFIX) else ""
        if not self.is_top or key not in PENDING_ATTRS + ("type",):
            raise fuse_error(errno.ENOTSUP)
        try:
            parsed = _parse_attr(key, value, self.live.name)
        except (UnicodeDecodeError, ValueError) as e:
            raise UsageError(str(e)) from None
        if key == "type":
            await self.set_type(str(parsed))
        else:
            await self.live.change(self.draft.set_pending, key, parsed)

    async def set_type(self, type_: str) -> None:
        """Only a collection without versions can still choose its type."""
        if self.draft.state.base is not None:
            raise fuse_error(errno.EPERM)
        await self.live.change(self.draft.set_type, check_type(type_))

    async def removexattr(self, name: str) -> None:
        key = name[len(PREFIX):] if name.startswith(PREFIX) else ""
        if not self.is_top or key not in PENDING_ATTRS:
            raise fuse_error(errno.ENOTSUP)
        if key not in self.draft.state.attrs:
            raise fuse_error(pyfuse3.ENOATTR)
        await self.live.change(self.draft.set_pending, key, None)
