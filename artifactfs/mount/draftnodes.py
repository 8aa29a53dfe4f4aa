"""`<collection>/draft/`: the writable folder of a collection, one DraftNode per
path, each request turned into the matching staging.Draft operation.

A file not yet modified is read from the base version through the shared cache
(BaseFileHandle); opening it for writing copies it up first (or just empties it
for O_TRUNC), after which reads and writes go to the staging file.  What a
version cannot hold is refused: hard links, symlinks, devices and fifos with
EPERM, names invalid in an artifact with EINVAL."""
from __future__ import annotations

import errno
import json
import os
import stat
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyfuse3

from ..errors import InvalidNameError
from ..names import check_alias, check_name, check_type
from ..staging import Draft
from ..staging import Node as Info
from ..standins import join
from .inodes import SHORT_TIMEOUT, Handle, Node, fuse_error
from .reader import FileReader
from .refreader import ReferenceReader
from .xattrs import PREFIX, xattr_value

if TYPE_CHECKING:
    from .context import MountContext
    from .livedraft import LiveDraft

PENDING_ATTRS = ("description", "metadata", "aliases", "tags")
WRITE_BLOCK = 1024 * 1024


def _open_writable(draft: Draft, path: str, truncate: bool) -> int:
    """Copy-up (nothing is fetched when the file is to be emptied anyway) and open."""
    fd = os.open(draft.copy_up(path, keep_data=not truncate), os.O_RDWR | os.O_CLOEXEC)
    if truncate:
        os.ftruncate(fd, 0)
    return fd


def _open_readable(draft: Draft, path: str) -> tuple[Info, int | None]:
    """The node, and a descriptor if its bytes are on local disk already."""
    info = draft.stat(path)
    if info is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", path)
    if info.entry is not None:
        return info, None
    return info, os.open(info.disk, os.O_RDONLY | os.O_CLOEXEC)


def _create(draft: Draft, path: str, mode: int) -> tuple[int, Info]:
    """A new file, open, and its node: one trip to a worker thread."""
    fd = draft.create(path, mode)
    info = draft.stat(path)
    assert info is not None
    return fd, info


def _mkdir(draft: Draft, path: str, mode: int) -> Info:
    draft.mkdir(path, mode)
    info = draft.stat(path)
    assert info is not None
    return info


def _parse_attr(key: str, value: bytes) -> object:
    """An attribute for the next commit, from its xattr bytes (EINVAL when invalid)."""
    text = value.decode(errors="strict")
    if key == "metadata":
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise InvalidNameError("user.artifact.metadata must be a JSON object")
        return data
    if key in ("aliases", "tags"):
        items = [p.strip() for p in text.split(",") if p.strip()]
        for item in items:
            if key == "aliases":
                check_alias(item)
            else:
                check_name(item, "tag")
        return items
    return text


class DraftFileHandle(Handle):
    """An open staging file: reads and writes are pread/pwrite in a worker thread."""

    def __init__(self, live: "LiveDraft", fd: int):
        self.live = live
        self.fd = fd
        live.open_fds.add(fd)

    async def read(self, off: int, size: int) -> bytes:
        return await self.live.read(os.pread, self.fd, size, off)

    async def write(self, off: int, buf: bytes) -> int:
        return await self.live.write(self.fd, buf, off)

    async def fsync(self, datasync: bool) -> None:
        await self.live.read(os.fdatasync if datasync else os.fsync, self.fd)

    async def release(self) -> None:
        self.live.open_fds.discard(self.fd)
        await self.live.read(os.close, self.fd)


class BaseFileHandle(Handle):
    """A file of the base version opened for reading: served from the cache until
    someone copies it up, then from the staging file."""

    def __init__(self, node: "DraftNode"):
        assert node.info.entry is not None
        self.node = node
        self.base = FileReader(node.ctx.reader, node.info.entry, f"{node.live.name}/draft/{node.path}")
        self.fd: int | None = None

    async def read(self, off: int, size: int) -> bytes | memoryview:
        info = self.node.info
        if self.fd is None and info.entry is None and info.disk is not None:
            self.fd = await self.node.live.read(os.open, info.disk, os.O_RDONLY | os.O_CLOEXEC)
        if self.fd is not None:
            return await self.node.live.read(os.pread, self.fd, size, off)
        return await self.base.read(off, size)

    async def release(self) -> None:
        if self.fd is not None:
            await self.node.live.read(os.close, self.fd)


class DraftNode(Node):
    """A file or folder of a draft; key ("draft", collection, path)."""

    timeout = SHORT_TIMEOUT

    def __init__(self, ctx: "MountContext", key: tuple[str, ...], live: "LiveDraft", info: Info):
        super().__init__(ctx, key)
        self.live = live
        self.info = info
        self.gone = False  # unlinked or replaced: serves its open files, owns no name

    @property
    def path(self) -> str:
        return self.key[2]

    @property
    def mode(self) -> int:  # type: ignore[override]
        return (stat.S_IFDIR if self.info.is_dir else stat.S_IFREG) | self.info.mode

    def size(self) -> int:
        return self.info.size

    def mtime_ns(self) -> int:
        return self.info.mtime_ns

    def attributes(self) -> pyfuse3.EntryAttributes:
        a = super().attributes()
        a.st_blksize = WRITE_BLOCK  # cp and friends then write in 1 MiB requests
        return a

    async def refresh(self) -> Info:
        if self.gone:
            return self.info  # fstat of an unlinked open file: its last attributes
        info = await self.live.read(self.live.draft.stat, self.path)
        if info is None:
            raise fuse_error(errno.ENOENT)
        self.info = info
        return info

    async def getattr(self) -> pyfuse3.EntryAttributes:
        await self.refresh()
        return self.attributes()

    def _node(self, info: Info) -> "DraftNode":
        node = self.ctx.make("draft", ("draft", self.live.name, info.path), self.live, info)
        assert isinstance(node, DraftNode)
        node.info = info
        return node

    async def _stat_child(self, name: str) -> "DraftNode":
        info = await self.live.read(self.live.draft.stat, join(self.path, name))
        if info is None:
            raise fuse_error(errno.ENOENT)
        return self._node(info)

    # -- folders -------------------------------------------------------------------
    async def lookup(self, name: str) -> Node:
        if not self.info.is_dir:
            raise fuse_error(errno.ENOTDIR)
        return await self._stat_child(name)

    async def children(self) -> Sequence[tuple[str, Node]]:
        infos = await self.live.read(self.live.draft.listdir, self.path)
        return [(i.path.rpartition("/")[2], self._node(i)) for i in infos]

    async def create(self, name: str, mode: int, flags: int) -> tuple[Node, Handle]:
        fd, info = await self.live.change(_create, self.live.draft, join(self.path, name), mode)
        return self._node(info), DraftFileHandle(self.live, fd)

    async def mknod(self, name: str, mode: int, rdev: int) -> Node:
        if not stat.S_ISREG(mode):
            raise fuse_error(errno.EPERM)  # devices, fifos and sockets are not artifact files
        fd = await self.live.change(self.live.draft.create, join(self.path, name), mode)
        os.close(fd)
        return await self._stat_child(name)

    async def mkdir(self, name: str, mode: int) -> Node:
        return self._node(await self.live.change(_mkdir, self.live.draft, join(self.path, name), mode))

    async def symlink(self, name: str, target: str) -> Node:
        raise fuse_error(errno.EPERM)  # a version holds regular files only

    async def link(self, target: Node, name: str) -> Node:
        raise fuse_error(errno.EPERM)

    async def unlink(self, name: str) -> None:
        await self.live.change(self.live.draft.unlink, join(self.path, name))
        self._detach(join(self.path, name))

    async def rmdir(self, name: str) -> None:
        await self.live.change(self.live.draft.rmdir, join(self.path, name))
        self._detach(join(self.path, name))

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        if not isinstance(new_parent, DraftNode) or new_parent.live is not self.live:
            raise fuse_error(errno.EXDEV)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fuse_error(errno.EINVAL)
        old, new = join(self.path, name), join(new_parent.path, new_name)
        await self.live.change(self.live.draft.rename, old, new, bool(flags & pyfuse3.RENAME_NOREPLACE))
        self._detach(new)
        self._move(old, new)

    def _key(self, path: str) -> tuple[str, ...]:
        return ("draft", self.live.name, path)

    def _detach(self, path: str) -> None:
        """The node that was at `path` keeps serving open files, but no longer owns the name."""
        node = self.ctx.table.find(self._key(path))
        if isinstance(node, DraftNode):
            node.gone = True
            self.ctx.table.rekey(node, ("draft-gone", self.live.name, uuid.uuid4().hex))

    def _move(self, old: str, new: str) -> None:
        """Live nodes at and below `old` now live at `new`, with their inode numbers."""
        moved = self.ctx.table.find(self._key(old))
        if moved is None:
            return
        if isinstance(moved, DraftNode) and moved.info.is_dir:
            for node in self.ctx.table.nodes():
                if (isinstance(node, DraftNode) and node.live is self.live and not node.gone
                        and node.path.startswith(old + "/")):
                    self.ctx.table.rekey(node, self._key(new + node.path[len(old):]))
        self.ctx.table.rekey(moved, self._key(new))

    # -- files ---------------------------------------------------------------------
    async def open(self, flags: int) -> Handle:
        if self.info.is_dir:
            raise fuse_error(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            fd = await self.live.change(_open_writable, self.live.draft, self.path, bool(flags & os.O_TRUNC))
            await self.refresh()
            return DraftFileHandle(self.live, fd)
        info, fd = await self.live.read(_open_readable, self.live.draft, self.path)
        self.info = info
        if fd is None:
            if info.entry.ref is not None:  # bytes at a URI, not in the store
                return ReferenceReader(self.ctx, info.entry, self.path)
            return BaseFileHandle(self)
        return DraftFileHandle(self.live, fd)

    async def setattr(self, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None) -> pyfuse3.EntryAttributes:
        draft = self.live.draft
        if (fields.update_uid and attr.st_uid != self.ctx.uid) or (fields.update_gid and attr.st_gid != self.ctx.gid):
            raise fuse_error(errno.EPERM)  # a version has no owners
        if fields.update_size:
            await self.live.change(draft.truncate, self.path, attr.st_size)
        if fields.update_mode:
            await self.live.change(draft.chmod, self.path, attr.st_mode)
        if fields.update_atime or fields.update_mtime:
            await self.live.change(draft.utime, self.path,
                                   attr.st_atime_ns if fields.update_atime else None,
                                   attr.st_mtime_ns if fields.update_mtime else None)
        return await self.getattr()

    # -- attributes for the next commit (on the draft folder itself) -------------------
    async def xattrs(self) -> dict[str, bytes]:
        if self.path:
            return {}
        state = self.live.draft.state
        out = {PREFIX + k: xattr_value(state.attrs[k]) for k in PENDING_ATTRS if k in state.attrs}
        out[PREFIX + "type"] = state.type.encode()
        out[PREFIX + "base"] = b"" if state.base is None else f"{self.live.name}:v{state.base}".encode()
        return out

    async def setxattr(self, name: str, value: bytes) -> None:
        key = name[len(PREFIX):] if name.startswith(PREFIX) else ""
        if self.path or key not in PENDING_ATTRS + ("type",):
            raise fuse_error(errno.ENOTSUP)
        try:
            parsed = _parse_attr(key, value)
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidNameError(str(e)) from None
        if key == "type":
            await self.set_type(str(parsed))
        else:
            await self.live.change(self.live.draft.set_attr, key, parsed)

    async def set_type(self, type_: str) -> None:
        """Only a collection without versions can still choose its type."""
        if self.live.draft.state.base is not None:
            raise fuse_error(errno.EPERM)
        await self.live.change(self.live.draft.set_type, check_type(type_))

    async def removexattr(self, name: str) -> None:
        key = name[len(PREFIX):] if name.startswith(PREFIX) else ""
        if self.path or key not in PENDING_ATTRS:
            raise fuse_error(errno.ENOTSUP)
        if key not in self.live.draft.state.attrs:
            raise fuse_error(pyfuse3.ENOATTR)
        await self.live.change(self.live.draft.set_attr, key, None)
