"""The inode table and the base class of every node kind the mount shows.

Inode numbers are a hash of a node's key (e.g. ("ver", collection, "3", "a/b.txt")),
so the same path has the same number for the life of the mount (and across
mounts) without a table that grows forever: node objects are dropped when the
kernel forgets them and re-made with the same number on the next lookup.

A Node answers the requests ops.py dispatches to it.  Every write-like request
defaults to EROFS; node kinds that accept writes (drafts) override them.  Nodes
are made by kind name (InodeTable.make), so the drafts layer can swap in its
subclasses before the mount starts."""
from __future__ import annotations

import errno
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyfuse3
import xxhash

from .context import MountContext
from .errnos import fuse_error
from .handles import Handle

Key = tuple[str, ...]
LONG_TIMEOUT = 24 * 3600.0   # immutable version contents
SHORT_TIMEOUT = 1.0          # collections and aliases change under us
BLKSIZE = 128 * 1024
_INO_MASK = (1 << 63) - 1


class Node:
    """One inode.  Subclasses set `mode` and `timeout` and implement what applies."""

    mode = stat.S_IFREG | 0o444
    timeout = SHORT_TIMEOUT
    evictable = False  # a folder the inode soft limit may ask the kernel to forget (evict.py)
    table: "InodeTable"  # set by the table that holds the node (InodeTable.node, set_root)

    def __init__(self, ctx: MountContext, key: Key):
        self.ctx = ctx
        self.key = key
        self.ino = 0  # set by InodeTable.node()

    # -- attributes ------------------------------------------------------------
    def size(self) -> int:
        return 0

    def mtime_ns(self) -> int:
        return self.ctx.started_ns

    def attributes(self) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.ino
        a.st_mode = self.mode
        a.st_nlink = 1  # "unknown" for directories: find must not use the leaf optimisation
        a.st_uid, a.st_gid = self.ctx.uid, self.ctx.gid
        size = self.size()
        a.st_size = size
        a.st_blksize = BLKSIZE
        a.st_blocks = (size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.mtime_ns()
        a.entry_timeout = a.attr_timeout = self.timeout
        return a

    async def getattr(self) -> pyfuse3.EntryAttributes:
        """Fresh attributes; nodes whose attributes change refresh here."""
        return self.attributes()

    def attributes_now(self) -> pyfuse3.EntryAttributes | None:
        """getattr() in the calling thread, which is not the trio loop (syncops.py),
        or None to have it go the trio way."""
        return None

    def added(self) -> None:
        """The node entered the table (its `ino` and `table` are set)."""

    def forgotten(self) -> None:
        """The kernel dropped its last reference (the node leaves the table)."""

    # -- directories -------------------------------------------------------------
    async def lookup(self, name: str) -> "Node":
        raise fuse_error(errno.ENOTDIR)

    def create_now(self, name: str, mode: int, flags: int) -> tuple["Node", Handle] | None:
        """create() in the calling thread, which is not the trio loop (syncops.py),
        or None to have it go the trio way."""
        return None

    def absent_now(self, name: str) -> bool:
        """Surely no entry `name`, known in the calling thread, which is not the trio
        loop (syncops.py); False: ask lookup()."""
        return False

    async def children(self) -> Sequence[tuple[str, "Node"]]:
        """The entries of a directory, in listing order."""
        raise fuse_error(errno.ENOTDIR)

    # -- files and links -----------------------------------------------------------
    async def open(self, flags: int) -> Handle:
        raise fuse_error(errno.EISDIR if stat.S_ISDIR(self.mode) else errno.EACCES)

    async def readlink(self) -> str:
        raise fuse_error(errno.EINVAL)

    # -- extended attributes ---------------------------------------------------------
    async def xattrs(self) -> dict[str, bytes]:
        return {}

    async def setxattr(self, name: str, value: bytes) -> None:
        raise fuse_error(errno.EROFS)

    async def removexattr(self, name: str) -> None:
        raise fuse_error(errno.EROFS)

    # -- writes: read-only unless a node kind says otherwise ------------------------------
    async def setattr(self, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None) -> pyfuse3.EntryAttributes:
        raise fuse_error(errno.EROFS)

    async def create(self, name: str, mode: int, flags: int) -> tuple["Node", Handle]:
        raise fuse_error(errno.EROFS)

    async def mknod(self, name: str, mode: int, rdev: int) -> "Node":
        raise fuse_error(errno.EROFS)

    async def mkdir(self, name: str, mode: int) -> "Node":
        raise fuse_error(errno.EROFS)

    async def symlink(self, name: str, target: str) -> "Node":
        raise fuse_error(errno.EROFS)

    async def link(self, target: "Node", name: str) -> "Node":
        raise fuse_error(errno.EROFS)

    async def unlink(self, name: str) -> None:
        raise fuse_error(errno.EROFS)

    async def rmdir(self, name: str) -> None:
        raise fuse_error(errno.EROFS)

    async def rename(self, name: str, new_parent: "Node", new_name: str, flags: int) -> None:
        raise fuse_error(errno.EROFS)

    # -- the filesystem (asked of the root) ---------------------------------------------
    async def statfs(self) -> pyfuse3.StatvfsData:
        raise fuse_error(errno.ENOSYS)


N = TypeVar("N", bound=Node)


@dataclass(frozen=True, slots=True)
class Dentry:
    """A name in a folder, as the kernel knows it: the parent's inode and the name."""

    parent: int
    name: str


def ino_of(key: Key) -> int:
    """A stable 63-bit inode number for a key (never 0 or the root's 1)."""
    ino = xxhash.xxh3_64_intdigest("\0".join(key).encode()) & _INO_MASK
    return ino if ino > pyfuse3.ROOT_INODE else ino + 2


class InodeTable:
    """Live nodes by inode number, with the kernel's lookup counts, and the
    evictable folders the kernel holds, least recently used first (with the
    parent inode and name the kernel knows each by).  `kinds` maps a kind name
    ("root", "collection", "version", "dir", "file", "alias", ...) to the Node
    class make() builds for it, with the mount's context."""

    def __init__(self, ctx: MountContext, kinds: dict[str, type[Node]] | None = None) -> None:
        self.ctx = ctx
        self.kinds: dict[str, type[Node]] = dict(kinds or {})
        self._nodes: dict[int, Node] = {}
        self._by_key: dict[Key, Node] = {}
        self._lookups: dict[int, int] = {}
        self._folders: OrderedDict[int, Dentry] = OrderedDict()
        # Nodes are also made and remembered in pyfuse3's reader threads (syncops.py): each
        # read-then-write of the tables, and compact()'s swap, is one step under this lock.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._nodes)

    def set_root(self, root: Node) -> None:
        root.ino = pyfuse3.ROOT_INODE
        root.table = self
        self._nodes[root.ino] = root
        self._by_key[root.key] = root

    def make(self, kind: str, key: Key, *args: object) -> Node:
        """The live node for `key`, created as kinds[kind](ctx, key, *args)."""
        cls = self.kinds[kind]
        return self.node(key, lambda: cls(self.ctx, key, *args))  # type: ignore[call-arg]

    def node(self, key: Key, make: Callable[[], N]) -> N:
        """The live node for `key`, or a new one from make() (which must carry that key)."""
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                return found  # type: ignore[return-value]
            node = make()
            ino = ino_of(key)
            while ino in self._nodes:  # a 64-bit hash collision: astronomically rare
                ino = (ino + 1) & _INO_MASK or 2
            node.ino = ino
            node.table = self
            self._nodes[ino] = node
            self._by_key[key] = node
        node.added()
        return node

    def __getitem__(self, ino: int) -> Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise fuse_error(errno.ESTALE) from None

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def find(self, key: Key) -> Node | None:
        """The live node for `key`, without making one."""
        return self._by_key.get(key)

    def detach(self, node: Node) -> None:
        """`node` no longer answers for its key (the inode it showed lost its name and
        another now shows there): the next lookup makes a new node, while the kernel
        keeps using this one by its number until it forgets it."""
        with self._lock:
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]

    def held(self, key: Key) -> bool:
        """Whether the kernel holds the node of `key` (looked up and not forgotten)."""
        node = self._by_key.get(key)
        return node is not None and node.ino in self._lookups

    def nodes(self) -> list[Node]:
        with self._lock:  # (reader threads add nodes: syncops.py)
            return list(self._nodes.values())

    def live(self, node: Node) -> Node:
        """The node the table holds for node's key, re-inserting `node` if it was
        forgotten meanwhile (a directory listing outlives the kernel's references)."""
        with self._lock:
            found = self._by_key.get(node.key)
            if found is not None:
                return found
            self._nodes[node.ino] = node
            self._by_key[node.key] = node
        node.added()
        return node

    def remember(self, node: Node) -> None:
        """The kernel now holds one more reference (lookup, readdirplus, create...)."""
        with self._lock:
            self._lookups[node.ino] = self._lookups.get(node.ino, 0) + 1

    def used(self, parent: int, name: str, node: Node | None = None) -> None:
        """Folder `parent` was used (a lookup in it, a listing); `node`, its entry
        `name`, was handed to the kernel."""
        folders = self._folders
        if parent in folders:
            folders.move_to_end(parent)
        if node is not None and node.evictable:
            folders[node.ino] = Dentry(parent, name)
            folders.move_to_end(node.ino)

    def coldest_folders(self, n: int) -> list[Dentry]:
        """The dentries of up to n evictable folders used least recently; they are
        no longer tracked (a later use tracks them again)."""
        out: list[Dentry] = []
        while self._folders and len(out) < n:
            out.append(self._folders.popitem(last=False)[1])
        return out

    def folders(self) -> int:
        return len(self._folders)

    def compact(self) -> None:
        """Re-make the tables at their present size: a dict keeps the hash table of
        the most entries it ever held (15 MB for 100,000 inodes after all are forgotten)."""
        with self._lock:
            self._nodes, self._by_key, self._lookups = dict(self._nodes), dict(self._by_key), dict(self._lookups)
            self._folders = OrderedDict(self._folders)

    def forget(self, ino: int, n: int) -> None:
        with self._lock:
            left = self._lookups.get(ino, 0) - n
            if left > 0:
                self._lookups[ino] = left
                return
            self._lookups.pop(ino, None)
            self._folders.pop(ino, None)
            if ino == pyfuse3.ROOT_INODE:
                return
            node = self._nodes.pop(ino, None)
            if node is not None and self._by_key.get(node.key) is node:
                del self._by_key[node.key]
        if node is not None:
            node.forgotten()


class SymlinkNode(Node):
    """A symlink with a fixed target (portfolio links, a pending `ln -sfn` in a collection)."""

    mode = stat.S_IFLNK | 0o777

    def __init__(self, ctx: MountContext, key: Key, target: str):
        super().__init__(ctx, key)
        self.target = target

    def size(self) -> int:
        return len(self.target)

    async def readlink(self) -> str:
        return self.target
