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

import errno
import json
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pyfuse3
import trio

from ..chunks.references import unreadable
from ..errors import CorruptStoreError
from ..registry.checks import skip_entry
from ..registry.manifest import DirEntry, Entry, FileEntry, SymlinkEntry
from ..registry.names import NAME_MAX, fits_name_max, parse_version
from ..registry.versions import CollectionInfo, Registry, VersionInfo
from ..timestamps import iso_ns
from . import portfolios
from .context import NO_OWNER, MountContext
from .errnos import fuse_error
from .handles import Handle
from .inodes import LONG_TIMEOUT, SHORT_TIMEOUT, Key, Node, ino_of
from .nativereads import NativeReads
from .reader import FileReader
from .refreader import ReferenceReader
from .refreshing import Refreshing
from .siblings import FolderReadAhead
from .xattrs import collection_xattrs, file_xattrs, version_xattrs

MISS_REFRESH = 1.0  # a lookup of an unknown name re-lists at most this often
PLAIN = "@"  # the separator of the spelling without ':' (never in a name: names.check_name)


@dataclass
class CollectionState:
    versions: set[int]
    aliases: dict[str, int]
    links: dict[int, str] = field(default_factory=dict)  # a portfolio's links: version -> symlink target


@dataclass
class CollectionKept:
    """What the mount keeps of one collection beyond its nodes' lives (the kernel
    forgets nodes; listings and version records seen last must survive, e.g. to
    be shown while the store is unreachable).  The root node owns them."""

    state: Refreshing[CollectionState]
    links: portfolios.LinkRecords = field(default_factory=dict)  # a portfolio's link records
    listed: CollectionState | None = None  # seen last: deleted versions and moved aliases leave the kernel's dentry cache
    versions: dict[Key, Refreshing[VersionInfo]] = field(default_factory=dict)  # by version folder key


def _collection_state(reg: Registry, project: str, info: CollectionInfo,
                      links: portfolios.LinkRecords) -> CollectionState:
    """Blocking: a collection's versions and aliases (and a portfolio's links) as the store has them now."""
    versions = set(reg.versions(project, info.name))
    targets = portfolios.portfolio_links(reg, project, info.name, versions, links, project) if info.portfolio else {}
    return CollectionState(versions, reg.aliases(project, info.name), targets)


class RootNode(Node):
    mode = stat.S_IFDIR | 0o755

    def __init__(self, ctx: MountContext, key: Key):
        super().__init__(ctx, key)
        self._collections: Refreshing[dict[str, CollectionInfo]] = Refreshing(
            lambda: {c.name: c for c in ctx.registry.collections(ctx.project)}, ctx.threads)
        self.kept: dict[str, CollectionKept] = {}
        self.registry_kept = portfolios.RegistryKept()

    async def collections(self, max_age: float | None = None) -> dict[str, CollectionInfo]:
        return await self._collections.get(self.ctx.refresh if max_age is None else max_age)

    def _child(self, info: CollectionInfo) -> Node:
        kept = self.kept.get(info.name)
        if kept is None:
            ctx, links = self.ctx, portfolios.LinkRecords()
            state = Refreshing(lambda: _collection_state(ctx.registry, ctx.project, info, links), ctx.threads)
            kept = self.kept[info.name] = CollectionKept(state, links)
        node = self.table.make("collection", ("coll", info.name), info, kept)
        assert isinstance(node, CollectionNode)
        node.info = info  # its description may have changed
        return node

    async def lookup(self, name: str) -> Node:
        infos = await self.collections()
        if name not in infos:
            infos = await self.collections(MISS_REFRESH)
        if name not in infos:
            if name == portfolios.REGISTRY_DIR and (entry := await self._registry(infos)):
                return entry[1]
            raise fuse_error(errno.ENOENT)
        return self._child(infos[name])

    async def children(self) -> Sequence[tuple[str, Node]]:
        infos = await self.collections()
        registry = await self._registry(infos)  # model-registry/, once it has models
        return sorted([(name, self._child(infos[name])) for name in infos] + ([registry] if registry else []))

    async def _registry(self, infos: dict[str, CollectionInfo]) -> tuple[str, Node] | None:
        return await portfolios.registry_entry(self.table, self.registry_kept, infos)

    async def statfs(self) -> pyfuse3.StatvfsData:
        """A read-only mount's size is its chunk cache's limit, and its free
        room what the cache has left: `df` shows how full the cache is, not a
        full disk that trips alerts (writes get EROFS whatever df says)."""
        used = (await self.ctx.run(self.ctx.reader.cache.stats))["cache_bytes"]
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = max(1, self.ctx.cache_size // 4096)
        s.f_bfree = s.f_bavail = max(0, self.ctx.cache_size - used) // 4096
        s.f_files = len(self.table)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def xattrs(self) -> dict[str, bytes]:
        stats = {**await self.ctx.run(self.ctx.reader.cache.stats), **self.ctx.reader.stats(),
                 **self.ctx.threads.stats(), **NativeReads.stats(), "inodes": len(self.table), "trees_loaded": self.ctx.trees_loaded}
        return {"user.artifactfs.stats": json.dumps(stats, sort_keys=True).encode(),
                "user.artifactfs.pid": str(os.getpid()).encode(),
                "user.artifactfs.project": self.ctx.project.encode(),
                "user.artifactfs.store": self.ctx.registry.store.url.encode()}


class CollectionNode(Node):
    mode = stat.S_IFDIR | 0o755

    def __init__(self, ctx: MountContext, key: Key, info: CollectionInfo, kept: CollectionKept):
        super().__init__(ctx, key)
        self.info = info
        self.name = info.name
        self.kept = kept

    def mtime_ns(self) -> int:
        return iso_ns(self.info.created_at)

    async def state(self, max_age: float | None = None) -> CollectionState:
        st = await self.kept.state.get(self.ctx.refresh if max_age is None else max_age)
        self._forget_moved(st)
        return st

    def _forget_moved(self, st: CollectionState) -> None:
        """Drop the kernel's dentries of names that no longer lead where they did:
        versions that left the listing (deleted) and aliases that moved or went, in
        each spelling (`NAME:x`, `NAME@x`).  An alias link is one inode per target
        (AliasNode), so its next lookup gets the link to the new version."""
        before, self.kept.listed = self.kept.listed, st
        if before is None or before is st:
            return
        for sep in (":", PLAIN):
            gone = [(f"v{n}", self._version_key(sep, n)) for n in before.versions - st.versions]
            gone += [(a, self._alias_key(sep, a, n)) for a, n in before.aliases.items() if st.aliases.get(a) != n]
            for name, key in gone:
                if self.table.held(key):  # held, but its name may be gone already (ENOENT)
                    try:
                        pyfuse3.invalidate_entry_async(self.ino, f"{self.name}{sep}{name}".encode(),
                                                       ignore_enoent=True)
                    except (OSError, RuntimeError):
                        pass  # the session is ending

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
            return self.table.make("fixed-link", ("plink" + tag, self.name, str(n)), target)
        if n is not None:
            if n not in st.versions:
                return None
            return self.table.make("version", self._version_key(sep, n), n, self)
        if rest in st.aliases:
            n = st.aliases[rest]
            return self.table.make("alias", self._alias_key(sep, rest, n), self, rest, sep, n)
        return None

    def alias_entries(self) -> list[bytes]:
        """The entry names of the aliases as last listed, in both spellings (`NAME:a`, `NAME@a`)."""
        st = self.kept.listed
        return [f"{self.name}{sep}{a}".encode() for a in (st.aliases if st else ()) for sep in (":", PLAIN)]

    def _version_key(self, sep: str, n: int) -> Key:
        """The inode key of version folder `NAME{sep}vN` (each spelling its own tree)."""
        return ("ver" + ("" if sep == ":" else sep), self.name, str(n), "")

    def _alias_key(self, sep: str, alias: str, n: int) -> Key:
        """The inode key of alias link `NAME{sep}ALIAS` while it points at vN."""
        return ("alias" + ("" if sep == ":" else sep), self.name, alias, str(n))

    async def children(self) -> Sequence[tuple[str, Node]]:
        st = await self.state()
        names = [f"{self.name}:v{n}" for n in sorted(st.versions)]
        names += [f"{self.name}:{a}" for a in sorted(st.aliases)]
        for name in [n for n in names if not fits_name_max(n)]:  # set by other tools: no program could open it
            skip_entry(f"{self.ctx.project}/{name}", f"longer than {NAME_MAX} bytes, the most a file name may be")
            names.remove(name)
        out = [(name, node) for name in names if (node := self._child(name, st)) is not None]
        errors: list[Exception] = []
        damaged: set[Node] = set()

        async def prepare(name: str, node: Node) -> None:
            try:
                await self._prepare(node)
            except CorruptStoreError as e:  # a record that does not parse: the others still list
                skip_entry(f"{self.ctx.project}/{self.name}/{name}", str(e))
                damaged.add(node)
            except Exception as e:  # reported below as itself, not as a trio ExceptionGroup
                errors.append(e)
        async with trio.open_nursery() as nursery:  # version records, fetched in parallel
            for name, node in out:
                nursery.start_soon(prepare, name, node)
        if errors:
            raise errors[0]
        return [(name, node) for name, node in out if node not in damaged]

    async def xattrs(self) -> dict[str, bytes]:
        return collection_xattrs(self.info)


class AliasNode(Node):
    """`<c>:<alias>` -> `<c>:vN` (or `<c>@<alias>` -> `<c>@vN`): one inode per alias
    and target, so its target never changes and the kernel may cache it
    (cache_symlinks).  When the alias moves, CollectionNode drops the dentry and the
    next lookup gets the inode of the new target."""

    mode = stat.S_IFLNK | 0o777

    def __init__(self, ctx: MountContext, key: Key, collection: CollectionNode, alias: str,
                 sep: str, version: int):
        super().__init__(ctx, key)
        self.collection = collection
        self.alias = alias
        self.target = f"{collection.name}{sep}v{version}"

    def size(self) -> int:
        return len(self.target)

    def mtime_ns(self) -> int:
        return self.collection.mtime_ns()

    async def readlink(self) -> str:
        return self.target


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

    def __init__(self, ctx: MountContext, key: Key, ref: VersionRef | None, tree: str):
        super().__init__(ctx, key)
        self.ref = ref
        self.tree_key = tree
        self.path = key[3]
        self._tree: dict[str, Entry] | None = None
        self._readahead: FolderReadAhead | None = None  # made at the first open of a file

    def mtime_ns(self) -> int:
        assert self.ref is not None
        return self.ref.mtime_ns

    async def entries(self) -> dict[str, Entry]:
        if self._tree is None:
            self._tree = await self.ctx.run(self.ctx.registry.load, self.tree_key)
            self.ctx.trees_loaded += 1
        return self._tree

    def _path(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    def _child(self, name: str, entry: Entry) -> Node:
        key = (self.key[0], self.key[1], self.key[2], self._path(name))
        if isinstance(entry, DirEntry):
            return self.table.make("dir", key, self.ref, entry.tree)
        if isinstance(entry, SymlinkEntry):
            return self.table.make("symlink", key, self.ref, entry)
        return self.table.make("file", key, self.ref, entry)

    async def lookup(self, name: str) -> Node:
        entry = (await self.entries()).get(name)
        if entry is None:
            raise fuse_error(errno.ENOENT)
        return self._child(name, entry)

    async def children(self) -> Sequence[tuple[str, Node]]:
        tree = await self.entries()
        return [(name, self._child(name, tree[name])) for name in sorted(tree)]

    def opened(self, name: str) -> None:
        """A file of this folder was opened: read ahead across its siblings (siblings.py)."""
        if self._tree is None or self.ref is None:
            return
        if self._readahead is None:
            self._readahead = FolderReadAhead(self.ctx.reader, self._tree, self._where, self._known)
        self._readahead.opened(name)

    def _where(self, name: str) -> str:
        assert self.ref is not None
        return self.ref.where(self._path(name))

    def _known(self, name: str) -> VersionFileNode | None:
        """The file node of `name` if the kernel knows it (its pages can be fed)."""
        node = self.table.find(self.key[:3] + (self._path(name),))
        return node if isinstance(node, VersionFileNode) else None


class VersionRootNode(VersionDirNode):
    """`<c>:vN`: its record gives the root tree and mtime; its attributes (aliases,
    tags, description...) may change, so xattrs re-read them when stale."""

    def __init__(self, ctx: MountContext, key: Key, version: int, collection: CollectionNode):
        super().__init__(ctx, key, None, "")
        self.version = version
        self.collection = collection
        kept = collection.kept.versions
        if key not in kept:
            reg, project, name = ctx.registry, ctx.project, key[1]
            kept[key] = Refreshing(lambda aliases: reg.version(project, name, version, aliases), ctx.threads)
        self._info = kept[key]

    async def _get(self, max_age: float) -> VersionInfo:
        aliases = (await self.collection.state()).aliases  # the collection's copy: no listing per version
        info = await self._info.get(max_age, aliases)
        mine = sorted(a for a, n in aliases.items() if n == self.version)
        if info.aliases != mine:  # an alias moved since (ln -sfn through this mount): as the links show
            info = replace(info, aliases=mine)
        return info

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

    def __init__(self, ctx: MountContext, key: Key, ref: VersionRef, entry: FileEntry):
        super().__init__(ctx, key)
        self.ref = ref
        self.entry = entry
        self.mode = stat.S_IFREG | (0o555 if entry.executable else 0o444)
        if entry.ref is not None and unreadable(entry) is not None:
            self.timeout = SHORT_TIMEOUT  # not pinned, so its OPEN reaches open() below: EIO (refreader.py)

    def attributes(self) -> pyfuse3.EntryAttributes:
        a = super().attributes()
        if self.ctx.unowned_files:  # --no-opens: no OPEN to refuse root's writes, so no owner (context.py)
            a.st_uid = a.st_gid = NO_OWNER
        return a

    def added(self) -> None:
        if self.ctx.native is not None:  # READs answered without Python where possible
            folder = ino_of(self.key[:3] + (posixpath.dirname(self.key[3]),))
            self.ctx.native.register(self.ino, self.entry, folder)

    def forgotten(self) -> None:
        if self.ctx.native is not None:
            self.ctx.native.unregister(self.ino)

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
        parent = self.table.find(self.key[:3] + (posixpath.dirname(path),))
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

    def __init__(self, ctx: MountContext, key: Key, ref: VersionRef, entry: SymlinkEntry):
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

