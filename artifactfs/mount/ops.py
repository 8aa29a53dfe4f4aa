"""pyfuse3.Operations for the mount: look the inode up, call the node, map
errors to errno (errnos.py).  No filesystem logic lives here; it is in the node
kinds."""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3

from ..drafts.posixnames import NAME_MAX
from .context import CALLER
from .errnos import to_fuse_error
from .handles import Handle
from .inodes import LONG_TIMEOUT, InodeTable, Node
from .noopen import HANDLE_BASE, InodeHandles, OpenMode
from .syncops import SyncAnswers

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
OpenHook = Callable[[Node, int, int], None]
DirReply = Callable[[bytes, pyfuse3.EntryAttributes, int], bool]
log = logging.getLogger("artifactfs.requests")  # --debug: one line per request Python answers


@dataclass(frozen=True)
class OpenDir:
    """A directory opened by opendir: its inode and its entries as listed then."""

    inode: int
    entries: Sequence[tuple[str, Node]]


def _mapped(fn: F) -> F:
    """An Operations method: the caller recorded for the request's task (CALLER),
    any exception turned into the errno the program sees (errnos.to_fuse_error);
    with --debug, one log line per request: its arguments, errno and time."""
    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        ctx = args[-1] if args and isinstance(args[-1], pyfuse3.RequestContext) else None
        if ctx is not None:
            CALLER.set((ctx.uid, ctx.gid))  # who creates, for the new entry's owner
        started = time.monotonic() if log.isEnabledFor(logging.DEBUG) else None
        outcome = "ok"
        try:
            return await fn(*args)
        except Exception as e:
            error = to_fuse_error(e, fn.__name__)
            outcome = errno.errorcode.get(error.errno, str(error.errno))
            raise error from None
        finally:
            if started is not None:
                log.debug("%s(%s) pid %s: %s in %.2f ms", fn.__name__, _shown(fn.__name__, args[1:-1] if ctx else args[1:]),
                          ctx.pid if ctx else "-", outcome, (time.monotonic() - started) * 1000)
    return wrapper  # type: ignore[return-value]


def _shown(op: str, args: Sequence[Any]) -> str:
    """A request's arguments for the debug log: names decoded (undecodable bytes
    escaped), data and extended attribute values as their length only (a value
    may hold a secret), other objects by their type."""
    def one(i: int, a: Any) -> str:
        if isinstance(a, bytes):
            value = op == "setxattr" and i == len(args) - 1
            return f"<{len(a)} bytes>" if value or len(a) > 255 else repr(a.decode("utf-8", "backslashreplace"))
        return repr(a) if isinstance(a, (int, float, str, type(None))) else f"<{type(a).__name__}>"
    return ", ".join(one(i, a) for i, a in enumerate(args))


class Operations(pyfuse3.Operations):
    """`opens` (noopen.OpenMode) says who answers OPEN.  NATIVE: pyfuse3's native
    threads answer the OPEN and RELEASE of version files (read by inode: fh is
    the inode number), Python the rest.  NONE: the first OPEN is answered ENOSYS
    and the kernel sends no more OPEN or RELEASE; files are then read and
    written by inode.  Unless PYTHON, the on_open hooks also hear of a process
    at LOOKUP and OPENDIR (and with NONE at SETATTR of the size, an O_TRUNC),
    as the opens of version files do not reach Python."""

    supports_dot_lookup = False

    def __init__(self, table: InodeTable, opens: OpenMode = OpenMode.choose()):
        super().__init__()
        self.table = table
        self.opens = opens
        self.no_open = opens is OpenMode.NONE
        self.native_open_pinned = opens is OpenMode.NATIVE  # (patched pyfuse3: fastopen.c)
        self.enable_atomic_o_trunc = not self.no_open  # without OPEN, O_TRUNC arrives as a SETATTR (patched pyfuse3)
        self.enable_cache_symlinks = True  # every link inode keeps its target (nodes.AliasNode; patched pyfuse3)
        # no node stores security.* (setxattr refuses it): the kernel's security.capability
        # lookup before a file's first write is answered ENODATA without Python (patched pyfuse3)
        self.enodata_xattr_prefix = b"security."
        # attributes given with the long timeout (immutable version contents) never change while
        # the kernel holds the inode: its GETATTRs, one after each file's READs, which mark atime
        # stale, are answered without Python (patched pyfuse3)
        self.native_attr_timeout = LONG_TIMEOUT
        self.on_open: list[OpenHook] = []  # hook(node, pid, flags) after each open/create is answered (lineage.py)
        self._counters = table.ctx.reader.counters  # OPEN requests answered: "opens" in user.artifactfs.stats
        self._handles: dict[int, Handle] = {}
        self._by_inode = InodeHandles(table)
        self._dirs: dict[int, OpenDir] = {}
        self._fh_numbers = itertools.count(HANDLE_BASE)  # (next() is one step: handles are also made in threads)
        self.sync = SyncAnswers(table, self._handles, self._fh, self._opened)  # syncops.py

    def _fh(self) -> int:
        return next(self._fh_numbers)

    def _opened(self, node: Node, pid: int, flags: int) -> None:
        for hook in self.on_open:
            hook(node, pid, flags)

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        self.table.remember(node)
        return node.attributes()

    # -- names -----------------------------------------------------------------------
    @_mapped
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        if len(name) > NAME_MAX:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        text = os.fsdecode(name)
        node = await self.table[parent_inode].lookup(text)
        attrs = await node.getattr()
        self.table.remember(node)
        self.table.used(parent_inode, text, node)
        if self.opens is not OpenMode.PYTHON and ctx is not None:
            self._opened(node, ctx.pid, os.O_RDONLY)
        return attrs

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.table.forget(ino, n)
            if self.table.get(ino) is None:
                self._by_inode.forget(ino)

    @_mapped
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return await self.table[inode].getattr()

    @_mapped
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.table[inode]
        if self.no_open and fields.update_size:  # open(O_TRUNC) sends no OPEN
            self._opened(node, ctx.pid, os.O_WRONLY)
        return await node.setattr(attr, fields, fh)

    @_mapped
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self.table[inode].readlink())

    # -- directories -------------------------------------------------------------------
    @_mapped
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh = self._fh()
        node = self.table[inode]
        self._dirs[fh] = OpenDir(inode, await node.children())
        self.table.used(inode, "")
        if self.opens is not OpenMode.PYTHON:
            self._opened(node, ctx.pid, os.O_RDONLY | os.O_DIRECTORY)
        return fh

    @_mapped
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self.list_dir(fh, start_id, lambda name, attrs, next_id: pyfuse3.readdir_reply(token, name, attrs, next_id))

    def list_dir(self, fh: int, start_id: int, reply: DirReply) -> None:
        """Hand the entries of open directory `fh` from index `start_id` on to
        reply(name, attributes, next index) until it returns False (the kernel's
        buffer is full); each entry taken counts as a lookup (readdirplus)."""
        listing = self._dirs[fh]
        for i in range(start_id, len(listing.entries)):
            name, node = listing.entries[i]
            node = self.table.live(node)
            if not reply(os.fsencode(name), node.attributes(), i + 1):
                return
            self.table.remember(node)
            self.table.used(listing.inode, name, node)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # -- files -----------------------------------------------------------------------
    @_mapped
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self.no_open:  # the kernel sends no more OPEN or RELEASE (noopen.py)
            raise pyfuse3.FUSEError(errno.ENOSYS)
        node = self.table[inode]
        handle = await node.open(flags)
        self._opened(node, ctx.pid, flags)
        self._counters["opens"] += 1
        fh = self._fh()
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=handle.keep_cache, direct_io=handle.direct_io)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        try:  # the hot path: no wrapper coroutine
            handle = self._handles.get(fh) or await self._by_inode.reader(fh)
            return await handle.read(off, size)
        except Exception as e:
            raise to_fuse_error(e, "read") from None

    @_mapped
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles.get(fh) or await self._by_inode.writer(fh)
        return await handle.write(off, buf)

    async def flush(self, fh: int) -> None:
        """Not implemented on purpose: after one ENOSYS the kernel stops sending a
        request at every close(); release() is where handles finish their work."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_mapped
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles.get(fh) or await self._by_inode.reader(fh)
        await handle.fsync(datasync)

    @_mapped
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            await handle.release()

    # -- changes: EROFS unless the node kind accepts them ---------------------------------
    @_mapped
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node, handle = await self.table[parent_inode].create(os.fsdecode(name), mode, flags)
        self._opened(node, ctx.pid, flags)
        fh = self._fh()
        self._handles[fh] = handle
        info = pyfuse3.FileInfo(fh=fh, keep_cache=handle.keep_cache, direct_io=handle.direct_io)
        return info, self._entry(node)

    @_mapped
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(await self.table[parent_inode].mknod(os.fsdecode(name), mode, rdev))

    @_mapped
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(await self.table[parent_inode].mkdir(os.fsdecode(name), mode))

    @_mapped
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self.table[parent_inode].symlink(os.fsdecode(name), os.fsdecode(target))
        return self._entry(node)

    @_mapped
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self.table[new_parent_inode].link(self.table[inode], os.fsdecode(new_name))
        return self._entry(node)

    @_mapped
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.table[parent_inode].unlink(os.fsdecode(name))

    @_mapped
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.table[parent_inode].rmdir(os.fsdecode(name))

    @_mapped
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self.table[parent_inode_old].rename(
            os.fsdecode(name_old), self.table[parent_inode_new], os.fsdecode(name_new), flags)

    # -- extended attributes -------------------------------------------------------------
    @_mapped
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = (await self.table[inode].xattrs()).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_mapped
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [os.fsencode(n) for n in await self.table[inode].xattrs()]

    @_mapped
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.table[inode].setxattr(os.fsdecode(name), value)

    @_mapped
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.table[inode].removexattr(os.fsdecode(name))

    # -- the filesystem ------------------------------------------------------------------
    @_mapped
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return await self.table[pyfuse3.ROOT_INODE].statfs()
