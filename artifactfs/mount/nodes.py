"""The read-only node kinds of the mount:

  /                          RootNode        one folder per collection
  <c>/                       CollectionNode  versions and alias symlinks
  <c>/<c>:vN/                VersionRootNode a version's root tree
  <c>/<c>:vN/a/              VersionDirNode  one tree, loaded on first lookup/readdir
  <c>/<c>:vN/a/f             VersionFileNode contents read lazily by chunk; mtime from the entry
  <c>/<c>:vN/a/l             VersionLinkNode a symlink entry (readlink gives its target)
  <c>/<c>:<alias>            AliasNode       symlink to <c>:vN
  <c>/<c>@vN/, <c>/<c>@<alias>  the same without ':' (looked up, not listed)

Collections and aliases are re-listed when older than the refresh period, so
versions and aliases committed elsewhere appear without remounting."""
from __future__ import annotations

import bisect
import errno
import json
import logging
import os
import posixpath
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pyfuse3
import trio

from ..errors import ArtifactfsError
from ..registry.manifest import DirEntry, Entry, FileEntry, SymlinkEntry
from ..registry.names import parse_version
from ..registry.versions import CollectionInfo, VersionInfo
from ..timestamps import iso_ns
from . import portfolios
from .context import MountContext
from .inodes import LONG_TIMEOUT, Handle, Node, fuse_error
from .reader import FileReader
from .refreader import ReferenceReader
from .xattrs import collection_xattrs, file_xattrs, version_xattrs

log = logging.getLogger("artifactfs.mount")
MISS_REFRESH = 1.0  # a lookup of an unknown name re-lists at most this often
SIBLING_READAHEAD = 32  # small files fetched ahead (into the page cache) of a reader opening a folder's files in order
SIBLING_BATCH = 8  # ... in batches of this many per worker-thread job (one thread hop per batch)
SIBLING_BYTES = 32 * 1024 * 1024  # ... and at most this many bytes ahead (as for a big file)
SCATTERED_OPENS = 4  # out-of-order opens in one folder before all its small files are fetched (a shuffled loader)
FOLDER_BYTES = 64 * 1024 * 1024  # ... if they hold at most this many bytes not fetched yet
PLAIN = "@"  # the separator of the spelling without ':' (never in a name: names.check_name)
T = TypeVar("T")


class Refreshing(Generic[T]):
    """A value fetched in a worker thread, re-fetched once older than max_age;
    concurrent callers share one fetch.  While the store is unreachable the last
    value is served (and the failure logged) rather than failing every listing."""

    def __init__(self, fetch: Callable[..., T]):
        self._fetch = fetch
        self._value: T | None = None
        self._at = 0.0
        self._lock = trio.Lock()

    def _stale(self, max_age: float) -> bool:
        return self._value is None or time.monotonic() - self._at > max_age

    async def get(self, ctx: MountContext, max_age: float, *args: object) -> T:
        """The value, re-fetched as fetch(*args) when stale."""
        if self._stale(max_age):
            async with self._lock:
                if self._stale(max_age):
                    started = time.monotonic()
                    try:
                        self._value = await ctx.run(self._fetch, *args)
                    except (ArtifactfsError, OSError) as e:
                        if self._value is None:
                            raise
                        log.warning("refresh failed, showing what was last seen: %s", e)
                    self._at = started
        assert self._value is not None
        return self._value


class RootNode(Node):
    mode = stat.S_IFDIR | 0o755

    def __init__(self, ctx: MountContext, key: tuple[str, ...]):
        super().__init__(ctx, key)
        self._collections: Refreshing[dict[str, CollectionInfo]] = Refreshing(
            lambda: {c.name: c for c in ctx.registry.collections(ctx.project)})

    async def collections(self, max_age: float | None = None) -> dict[str, CollectionInfo]:
        return await self._collections.get(self.ctx, self.ctx.refresh if max_age is None else max_age)

    def _child(self, info: CollectionInfo) -> Node:
        node = self.ctx.make("collection", ("coll", info.name), info)
        node.info = info  # type: ignore[attr-defined]  # description may have changed
        return node

    async def lookup(self, name: str) -> Node:
        infos = await self.collections()
        if name not in infos:
            infos = await self.collections(MISS_REFRESH)
        if name not in infos:
            if name == portfolios.REGISTRY_DIR and (entry := await portfolios.registry_entry(self.ctx, infos)):
                return entry[1]
            raise fuse_error(errno.ENOENT)
        return self._child(infos[name])

    async def children(self) -> Sequence[tuple[str, Node]]:
        infos = await self.collections()
        registry = await portfolios.registry_entry(self.ctx, infos)  # model-registry/, once it has models
        return sorted([(name, self._child(infos[name])) for name in infos] + ([registry] if registry else []))

    async def statfs(self) -> pyfuse3.StatvfsData:
        """Capacity is the local cache's size limit; nothing is free for writing."""
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = max(1, self.ctx.cache_size // 4096)
        s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.ctx.table)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def xattrs(self) -> dict[str, bytes]:
        stats = {**await self.ctx.run(self.ctx.reader.cache.stats), **self.ctx.reader.stats(),
                 "inodes": len(self.ctx.table), "trees_loaded": self.ctx.trees_loaded}
        return {"user.artifactfs.stats": json.dumps(stats, sort_keys=True).encode(),
                "user.artifactfs.pid": str(os.getpid()).encode(),
                "user.artifactfs.project": self.ctx.project.encode()}


@dataclass
class CollectionState:
    versions: set[int]
    aliases: dict[str, int]
    links: dict[int, str] = field(default_factory=dict)  # a portfolio's links: version -> symlink target


class CollectionNode(Node):
    mode = stat.S_IFDIR | 0o755

    def __init__(self, ctx: MountContext, key: tuple[str, ...], info: CollectionInfo):
        super().__init__(ctx, key)
        self.info = info
        self.name = info.name
        reg, project = ctx.registry, ctx.project
        name, known = self.name, ctx.keep(("links", info.name), dict)

        def fetch() -> CollectionState:
            versions = set(reg.versions(project, name))
            links = portfolios.portfolio_links(reg, project, name, versions, known, project) if info.portfolio else {}
            return CollectionState(versions, reg.aliases(project, name), links)
        self._state: Refreshing[CollectionState] = ctx.keep(("state", name), lambda: Refreshing(fetch))

    def mtime_ns(self) -> int:
        return iso_ns(self.info.created_at)

    async def state(self, max_age: float | None = None) -> CollectionState:
        st = await self._state.get(self.ctx, self.ctx.refresh if max_age is None else max_age)
        portfolios.forget_removed(self, st, (":", PLAIN))  # deleted versions leave the kernel's dentry cache
        return st

    async def lookup(self, name: str) -> Node:
        node = self._child(name, await self.state())
        if node is None:
            node = self._child(name, await self.state(MISS_REFRESH))
        if node is None:
            raise fuse_error(errno.ENOENT)
        await self._prepare(node)
        return node

    @staticmethod
    async def _prepare(node: Node) -> None:
        """Fetch what a child's attributes need (a version's record, an alias target)."""
        if isinstance(node, VersionRootNode):
            await node.load()
        elif isinstance(node, AliasNode):
            await node.target()

    def _child(self, name: str, st: CollectionState) -> Node | None:
        """`NAME:vN`, `NAME:ALIAS`, or the same spelled with '@' (`NAME@vN`,
        `NAME@ALIAS`) for tools that read ':' as a separator (PYTHONPATH, tar,
        rsync, scp, docker -v).  The '@' spelling is its own tree of inodes whose
        alias links point at `NAME@vN`, so a path never leads back to a ':'."""
        prefix, sep, rest = name.partition(":")
        if prefix != self.name or not sep:
            prefix, sep, rest = name.partition(PLAIN)
            if prefix != self.name or not sep:
                return None
        n = parse_version(rest)
        tag = "" if sep == ":" else sep
        if n is not None and n in st.links:  # a portfolio's link (portfolios.py)
            target = st.links[n] if sep == ":" else st.links[n].replace(":", sep)
            return self.ctx.make("fixed-link", ("plink" + tag, self.name, str(n)), target)
        if n is not None:
            return self.ctx.make("version", ("ver" + tag, self.name, str(n), ""), n, self) if n in st.versions else None
        if rest in st.aliases:
            return self.ctx.make("alias", ("alias" + tag, self.name, rest), self, rest, sep)
        return None

    async def children(self) -> Sequence[tuple[str, Node]]:
        st = await self.state()
        names = [f"{self.name}:v{n}" for n in sorted(st.versions)]
        names += [f"{self.name}:{a}" for a in sorted(st.aliases)]
        out = [(name, node) for name in names if (node := self._child(name, st)) is not None]
        errors: list[Exception] = []

        async def prepare(node: Node) -> None:
            try:
                await self._prepare(node)
            except Exception as e:  # reported below as itself, not as a trio ExceptionGroup
                errors.append(e)
        async with trio.open_nursery() as nursery:  # version records, fetched in parallel
            for _, node in out:
                nursery.start_soon(prepare, node)
        if errors:
            raise errors[0]
        return out

    async def xattrs(self) -> dict[str, bytes]:
        return collection_xattrs(self.info)


class AliasNode(Node):
    """`<c>:<alias>` -> `<c>:vN` (or `<c>@<alias>` -> `<c>@vN`), re-read from the collection's state on each readlink."""

    mode = stat.S_IFLNK | 0o777

    def __init__(self, ctx: MountContext, key: tuple[str, ...], collection: CollectionNode, alias: str,
                 sep: str = ":"):
        super().__init__(ctx, key)
        self.collection = collection
        self.alias = alias
        self.sep = sep
        self._target = ""

    def size(self) -> int:
        return len(self._target)

    def mtime_ns(self) -> int:
        return self.collection.mtime_ns()

    async def target(self) -> str:
        n = (await self.collection.state()).aliases.get(self.alias)
        if n is None:
            raise fuse_error(errno.ENOENT)
        self._target = f"{self.collection.name}{self.sep}v{n}"
        return self._target

    async def getattr(self):  # type: ignore[no-untyped-def]
        await self.target()
        return self.attributes()

    async def readlink(self) -> str:
        return await self.target()


@dataclass(frozen=True)
class VersionRef:
    """What every node inside one version shares."""

    collection: str
    version: int
    mtime_ns: int

    def where(self, path: str) -> str:
        return f"{self.collection}:v{self.version}/{path}"


class VersionDirNode(Node):
    """A directory of a version: its tree is loaded on first lookup/readdir and
    kept while the kernel holds the folder (the inode soft limit may ask the
    kernel to forget it: evict.py)."""

    mode = stat.S_IFDIR | 0o555
    timeout = LONG_TIMEOUT
    evictable = True

    def __init__(self, ctx: MountContext, key: tuple[str, ...], ref: VersionRef | None, tree: str):
        super().__init__(ctx, key)
        self.ref = ref
        self.tree_key = tree
        self.path = key[3]
        self._tree: dict[str, Entry] | None = None
        self._names: list[str] = []  # sorted, for sibling read-ahead
        self._last_opened = -2
        self._ahead = 0  # names below this index have been fetched ahead
        self._scattered = 0  # out-of-order opens so far

    def mtime_ns(self) -> int:
        assert self.ref is not None
        return self.ref.mtime_ns

    async def entries(self) -> dict[str, Entry]:
        if self._tree is None:
            self._tree = await self.ctx.run(self.ctx.registry.load, self.tree_key)
            self.ctx.trees_loaded += 1
        return self._tree

    def _child(self, name: str, entry: Entry) -> Node:
        path = f"{self.path}/{name}" if self.path else name
        key = (self.key[0], self.key[1], self.key[2], path)
        if isinstance(entry, DirEntry):
            return self.ctx.make("dir", key, self.ref, entry.tree)
        if isinstance(entry, SymlinkEntry):
            return self.ctx.make("symlink", key, self.ref, entry)
        return self.ctx.make("file", key, self.ref, entry)

    async def lookup(self, name: str) -> Node:
        entry = (await self.entries()).get(name)
        if entry is None:
            raise fuse_error(errno.ENOENT)
        return self._child(name, entry)

    async def children(self) -> Sequence[tuple[str, Node]]:
        tree = await self.entries()
        return [(name, self._child(name, tree[name])) for name in sorted(tree)]

    def opened(self, name: str) -> None:
        """A file of this folder was opened.  A reader that opens the files in name
        order (cp -r, tar, rsync, a loader over sorted shards) gets the next small
        files fetched in the background and put in the kernel page cache, so their
        reads need no round trip through the daemon."""
        if self._tree is None or self.ref is None:
            return
        if not self._names:
            self._names = sorted(self._tree)
        i = bisect.bisect_left(self._names, name)
        sequential, self._last_opened = i == self._last_opened + 1, i
        if not sequential:
            self._ahead = 0
            self._scattered += 1
            if self._scattered == SCATTERED_OPENS:
                self._fetch_folder()
            return
        window = self._window(i + 1)
        if self._ahead - (i + 1) > window - max(1, min(SIBLING_BATCH, window // 2)):
            return  # enough ahead: wait until a whole batch can be fetched
        start, self._ahead = max(i + 1, self._ahead), i + 1 + window
        batch = self._small_files(self._names[start:self._ahead])
        for b in range(0, len(batch), SIBLING_BATCH):
            self.ctx.reader.prefetch(batch[b:b + SIBLING_BATCH])

    def _fetch_folder(self) -> None:
        """A reader opens this folder's files in no order (a shuffled loader): it
        will want all of them, so fetch the small ones not fetched yet, in name
        order, one worker-thread job at a time (ChunkReader.fetch_behind), into
        the kernel page cache.  Only when they add up to at most FOLDER_BYTES."""
        batch = self._small_files(self._names, FOLDER_BYTES)
        if batch:
            self.ctx.reader.fetch_behind(batch)

    def _small_files(self, names: Sequence[str], budget: int = 0) -> list[tuple[str, int, str, int]]:
        """(blob, size, where, inode) of the single-chunk files among `names` whose
        pages were not fed yet (inode 0 when the kernel does not know the file: its
        bytes then stay in the daemon's memory).  Marks them fed.  With a budget,
        nothing unless their sizes add up to at most that."""
        assert self._tree is not None and self.ref is not None
        batch = []
        for name in names:
            e = self._tree[name]
            if isinstance(e, FileEntry) and len(e.chunks) == 1:
                path = f"{self.path}/{name}" if self.path else name
                node = self.ctx.table.find(self.key[:3] + (path,))  # known to the kernel: feed its pages
                if isinstance(node, VersionFileNode) and node.fed:
                    continue  # the kernel has (or had and reclaimed) its pages: a warm re-read
                batch.append((e.chunks[0], e.size, self.ref.where(path), node))
        if budget and sum(size for _, size, _, _ in batch) > budget:
            return []
        out = []
        for blob, size, where, node in batch:
            ino = 0
            if isinstance(node, VersionFileNode):
                node.fed, ino = True, node.ino
            out.append((blob, size, where, ino))
        return out

    def _window(self, start: int) -> int:
        """How many names from `start` on to keep fetched ahead (fewer when big)."""
        assert self._tree is not None
        total = 0
        for n, name in enumerate(self._names[start:start + SIBLING_READAHEAD]):
            e = self._tree[name]
            total += e.size if isinstance(e, FileEntry) else 0
            if total > SIBLING_BYTES:
                return max(1, n)
        return SIBLING_READAHEAD


class VersionRootNode(VersionDirNode):
    """`<c>:vN`: its record gives the root tree and mtime; its attributes (aliases,
    tags, description...) may change, so xattrs re-read them when stale."""

    def __init__(self, ctx: MountContext, key: tuple[str, ...], version: int, collection: CollectionNode):
        super().__init__(ctx, key, None, "")
        self.version = version
        self.collection = collection
        self._info: Refreshing[VersionInfo] = ctx.keep(("info",) + key, lambda: Refreshing(
            lambda aliases: ctx.registry.version(ctx.project, key[1], version, aliases)))

    async def _get(self, max_age: float) -> VersionInfo:
        aliases = (await self.collection.state()).aliases  # the collection's copy: no listing per version
        return await self._info.get(self.ctx, max_age, aliases)

    async def load(self) -> VersionInfo:
        info = await self._get(float("inf"))
        if self.ref is None:
            self.ref = VersionRef(info.collection, info.version, iso_ns(info.created_at))
            self.tree_key = info.root
        return info

    async def entries(self) -> dict[str, Entry]:
        await self.load()
        return await super().entries()

    async def xattrs(self) -> dict[str, bytes]:
        await self.load()
        return version_xattrs(await self._get(self.ctx.refresh))


class VersionFileNode(Node):
    timeout = LONG_TIMEOUT
    fed = False  # its bytes were offered to the kernel page cache (sibling read-ahead)

    def __init__(self, ctx: MountContext, key: tuple[str, ...], ref: VersionRef, entry: FileEntry):
        super().__init__(ctx, key)
        self.ref = ref
        self.entry = entry
        self.mode = stat.S_IFREG | (0o555 if entry.executable else 0o444)

    def size(self) -> int:
        return self.entry.size

    def mtime_ns(self) -> int:
        """The file's own mtime when the version keeps it, else the version's time."""
        t = self.entry.mtime_ns
        return self.ref.mtime_ns if t is None else t

    async def open(self, flags: int) -> Handle:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise fuse_error(errno.EROFS)
        path = self.key[3]
        if self.entry.ref is not None:  # bytes at a URI, not in the store
            return ReferenceReader(self.ctx, self.entry, self.ref.where(path))
        parent = self.ctx.table.find(self.key[:3] + (posixpath.dirname(path),))
        if isinstance(parent, VersionDirNode):
            parent.opened(posixpath.basename(path))
        return FileReader(self.ctx.reader, self.entry, self.ref.where(path))

    async def xattrs(self) -> dict[str, bytes]:
        return file_xattrs(self.entry)


class VersionLinkNode(Node):
    """A symlink of a version: lstat shows it, readlink gives the stored target.
    The kernel resolves it like any symlink (the target may leave the mount)."""

    mode = stat.S_IFLNK | 0o777
    timeout = LONG_TIMEOUT

    def __init__(self, ctx: MountContext, key: tuple[str, ...], ref: VersionRef, entry: SymlinkEntry):
        super().__init__(ctx, key)
        self.ref = ref
        self.entry = entry

    def size(self) -> int:
        return self.entry.size

    def mtime_ns(self) -> int:
        return self.ref.mtime_ns

    async def readlink(self) -> str:
        return self.entry.target


def default_node_classes() -> dict[str, type[Node]]:
    return {"root": RootNode, "collection": CollectionNode, "version": VersionRootNode,
            "dir": VersionDirNode, "file": VersionFileNode, "symlink": VersionLinkNode,
            "alias": AliasNode, **portfolios.NODE_CLASSES}

