"""Manifests as content-addressed directory objects ("trees"), and the W&B views.

A version's root is a tree: one JSON object per directory, keyed by the hex
xxh3-128 of its bytes, naming files (digest, size, blob chunks) and sub-trees.
Listing one directory reads one tree; a commit that changes k files rewrites
only the trees on their paths.  The flat W&B manifest and the artifact digest
are computed from a walk of the trees.

Entry kinds (docs/store-format.md 3.5): FileEntry (a regular file: content,
executable bit, and its mtime in `extra["mtime_ns"]`), SymlinkEntry (the
target string) and DirEntry (a sub-tree; EMPTY_DIR, to the empty tree, is an
empty folder, which the W&B view does not show).  The flat W&B view shows a symlink
as an entry whose content is its target string, as git and tar hash them."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Union

import xxhash

from ..errors import CorruptStoreError, InvalidNameError, PathConflictError, shown
from .keys import blob_key, pack_object_key
from .names import check_component, check_path
from .packs import PackSpan, remember

CHUNK_SIZE = 8 * 1024 * 1024
MAX_TARGET = 4095  # bytes of a symlink target (PATH_MAX less the NUL)
MTIME_KEY = "mtime_ns"
TREE_FORMAT = "artifactfs-tree-v1"
DIGEST_HEADER = "wandb-artifact-manifest-v1\n"


def b64_digest(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hex_of_b64(digest: str) -> str:
    return base64.b64decode(digest).hex()


@dataclass(frozen=True)
class FileEntry:
    """One file: W&B digest (base64 xxh3-128 of all its bytes), size, and the blob
    keys (hex xxh3-128) of its CHUNK_SIZE pieces in order.  A small file may be
    packed: `pack` then says where its one chunk's bytes are (packs.py)."""

    digest: str
    size: int
    chunks: tuple[str, ...]
    executable: bool = False
    ref: str | None = None
    extra: Mapping[str, object] = field(default_factory=lambda: {"alg": "XXH128"})
    pack: PackSpan | None = None

    def __post_init__(self) -> None:
        if self.pack is not None:
            remember(self.chunks[0], self.pack)  # for readers that have only the blob key

    def object_keys(self) -> list[str]:
        """Store keys holding the file's bytes: its pack, or its blobs."""
        return [pack_object_key(self.pack.pack)] if self.pack is not None else [blob_key(c) for c in self.chunks]

    @property
    def mtime_ns(self) -> int | None:
        """The file's modification time (integer ns since the epoch), kept in
        `extra` so that the W&B view carries it; None for versions made before
        times were kept, and for references."""
        t = self.extra.get(MTIME_KEY)
        return t if isinstance(t, int) else None

    def with_mtime(self, mtime_ns: int | None) -> "FileEntry":
        """This entry with `mtime_ns` set (None: removed)."""
        extra = dict(_but_mtime(self.extra))
        if mtime_ns is not None:
            extra[MTIME_KEY] = int(mtime_ns)
        return FileEntry(self.digest, self.size, self.chunks, self.executable, self.ref, extra, self.pack)

    def same_content(self, other: "Leaf") -> bool:
        """Equal but for the mtime and where the bytes are stored: what decides
        whether a commit changes anything."""
        return (isinstance(other, FileEntry) and self.digest == other.digest and self.size == other.size
                and self.chunks == other.chunks and self.executable == other.executable and self.ref == other.ref
                and _but_mtime(self.extra) == _but_mtime(other.extra))

    def to_json(self) -> dict:
        d: dict = {"type": "file", "digest": self.digest, "size": self.size}
        if self.ref is None and self.chunks != default_chunks(self.digest, self.size):
            d["chunks"] = list(self.chunks)
        if self.executable:
            d["exec"] = True
        if self.ref is not None:
            d["ref"] = self.ref
        if dict(self.extra) != {"alg": "XXH128"}:
            d["extra"] = dict(self.extra)
        if self.pack is not None:
            d["pack"], d["at"] = self.pack.pack, self.pack.at
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "FileEntry":
        digest, size = str(d["digest"]), int(d["size"])
        if size < 0:
            raise CorruptStoreError("negative size in manifest")
        if d.get("ref") is not None:  # a reference: its bytes are not in the store
            chunks: tuple[str, ...] = ()
        elif "chunks" in d:
            chunks = tuple(check_object_key(str(c)) for c in d["chunks"])
        else:
            chunks = default_chunks(digest, size)
        if d.get("ref") is None and len(chunks) != -(-size // CHUNK_SIZE):
            raise CorruptStoreError(f"{len(chunks)} chunks cannot hold {size} bytes")
        extra = dict(d.get("extra", {"alg": "XXH128"}))
        if MTIME_KEY in extra and type(extra[MTIME_KEY]) is not int:
            raise CorruptStoreError(f"{MTIME_KEY} {extra[MTIME_KEY]!r} is not an integer")
        return cls(digest, size, chunks, bool(d.get("exec", False)), d.get("ref"), extra, _pack_of(d, chunks))

    def chunk_span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk `index` within the file."""
        start = index * CHUNK_SIZE
        return start, min(CHUNK_SIZE, self.size - start)


def _but_mtime(extra: Mapping[str, object]) -> Mapping[str, object]:
    return {k: v for k, v in extra.items() if k != MTIME_KEY} if MTIME_KEY in extra else extra


def _pack_of(d: Mapping, chunks: tuple[str, ...]) -> PackSpan | None:
    """The `pack`/`at` members: only on a stored file of one chunk."""
    if "pack" not in d:
        return None
    at = d.get("at")
    if d.get("ref") is not None or len(chunks) != 1 or type(at) is not int or at < 0:
        raise CorruptStoreError("invalid pack location in manifest")
    return PackSpan(check_object_key(str(d["pack"])), at)


def check_object_key(key: str) -> str:
    """Blob and tree keys are 32 lower-case hex digits; anything else in a manifest
    read from the store is refused before it reaches a store path."""
    if len(key) != 32 or any(ch not in "0123456789abcdef" for ch in key):
        raise CorruptStoreError(f"invalid object key {key!r} in manifest")
    return key


def default_chunks(digest: str, size: int) -> tuple[str, ...]:
    """A file of at most one chunk is stored as one blob named by its own digest."""
    if size == 0:
        return ()
    if size <= CHUNK_SIZE:
        return (hex_of_b64(digest),)
    return ()


@dataclass(frozen=True)
class SymlinkEntry:
    """A symbolic link: its target, a string stored as given (never resolved by
    us).  W&B has no symlinks: its view of one is a file whose content is the
    target's UTF-8 bytes (digest, size) with `extra["symlink"]` = the target."""

    target: str
    ref = None
    chunks = ()
    executable = False
    mtime_ns = None

    def __post_init__(self) -> None:
        check_target(self.target)

    @property
    def digest(self) -> str:
        return b64_digest(xxhash.xxh3_128_digest(self.target.encode()))

    @property
    def size(self) -> int:
        return len(self.target.encode())

    @property
    def extra(self) -> dict[str, object]:
        return {"alg": "XXH128", "symlink": self.target}

    def same_content(self, other: "Leaf") -> bool:
        return self == other

    def to_json(self) -> dict:
        return {"type": "symlink", "target": self.target}


def check_target(target: object) -> str:
    """A symlink target: a non-empty string of valid UTF-8 without NUL, at most
    MAX_TARGET bytes.  Absolute and '..' targets are allowed: a target is only
    ever stored and recreated, never followed by artifactfs."""
    if not isinstance(target, str) or not target or "\0" in target:
        raise InvalidNameError(f"invalid symlink target {target!r}: empty or NUL")
    try:
        n = len(target.encode())
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid symlink target {target!r}: not UTF-8") from None
    if n > MAX_TARGET:
        raise InvalidNameError(f"invalid symlink target: longer than {MAX_TARGET} bytes")
    return target


@dataclass(frozen=True)
class DirEntry:
    """A sub-directory: its tree key and the totals below it."""

    tree: str
    size: int
    files: int

    def to_json(self) -> dict:
        return {"type": "dir", "tree": self.tree, "size": self.size, "files": self.files}


    def same_content(self, other: "Entry") -> bool:
        """Equal folders (compared where both are empty folders, store-format.md 5.2)."""
        return isinstance(other, DirEntry) and self.tree == other.tree


Leaf = Union[FileEntry, SymlinkEntry]
Entry = Union[FileEntry, SymlinkEntry, DirEntry]
Tree = dict[str, Entry]


def encode_tree(tree: Mapping[str, Entry]) -> bytes:
    body = {"format": TREE_FORMAT, "entries": {k: tree[k].to_json() for k in sorted(tree)}}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def tree_key(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


EMPTY_TREE = tree_key(encode_tree({}))  # the key of {"entries":{},"format":"artifactfs-tree-v1"}
EMPTY_DIR = DirEntry(EMPTY_TREE, 0, 0)  # an empty folder (store-format.md 3.5)


def decode_tree(data: bytes) -> Tree:
    """Parse and validate a tree: every name must be a safe single path component."""
    try:
        body = json.loads(data)
        if body.get("format") != TREE_FORMAT:
            raise ValueError("not a tree object")
        out: Tree = {}
        for name, d in body["entries"].items():
            check_component(name)
            if d["type"] == "dir":
                out[name] = DirEntry(check_object_key(str(d["tree"])), int(d["size"]), int(d["files"]))
            elif d["type"] == "file":
                out[name] = FileEntry.from_json(d)
            elif d["type"] == "symlink":
                out[name] = SymlinkEntry(d["target"])
            else:
                raise ValueError(f"unknown entry type {d['type']!r}")
        return out
    except CorruptStoreError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # InvalidNameError of a stored name too
        raise CorruptStoreError(f"corrupt manifest tree: {e}") from None


def summarize(tree: Mapping[str, Entry]) -> tuple[int, int]:
    """(total size, entry count) below a tree; a symlink counts as one entry of
    its target's length, as in the W&B view."""
    size = files = 0
    for e in tree.values():
        if isinstance(e, DirEntry):
            size, files = size + e.size, files + e.files
        else:
            size, files = size + e.size, files + 1
    return size, files


class TreeIO:
    """What tree algorithms need from the registry: load and save trees by key."""

    def load(self, key: str) -> Tree:  # pragma: no cover - interface
        raise NotImplementedError

    def save(self, tree: Mapping[str, Entry]) -> str:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Folder:
    """A change (apply_changes): a folder stays at this path, even when the other
    changes empty it.  Where there is none, an empty folder (EMPTY_DIR); a folder
    there keeps what it holds (another writer's additions merge in)."""


FOLDER = Folder()
Change = Union[FileEntry, SymlinkEntry, DirEntry, Folder, None]


def apply_changes(io: TreeIO, root: str | None, changes: Mapping[str, Change]) -> DirEntry:
    """New root from `root` (None: empty) with each path set to an entry or removed.

    A DirEntry value grafts a whole existing sub-tree (a moved folder; EMPTY_DIR, an
    empty one) at that path; changes below it then apply inside the graft.  FOLDER
    keeps (or makes) a folder there.  A folder given either way stays even when the
    changes below it empty it; other folders left empty by the changes disappear
    (W&B's remove() of a folder's files).  Only trees on changed paths are loaded
    and written: O(changes x depth).  A file and a directory at the same path is
    refused with InvalidNameError."""
    for p in changes:
        check_path(p)
    tree = _apply(io, io.load(root) if root else {}, changes, "")
    size, files = summarize(tree)
    return DirEntry(io.save(tree), size, files)


def _apply(io: TreeIO, tree: Tree, changes: Mapping[str, Change], where: str) -> Tree:
    tree = dict(tree)
    direct: dict[str, Change] = {}
    nested: dict[str, dict[str, Change]] = {}
    for path, entry in changes.items():
        head, sep, rest = path.partition("/")
        if sep:
            nested.setdefault(head, {})[rest] = entry
        else:
            direct[head] = entry
    for name, entry in direct.items():
        if entry is None:
            tree.pop(name, None)
        elif not isinstance(entry, DirEntry) and name in nested and any(v is not None for v in nested[name].values()):
            raise PathConflictError(f"{shown(where + name)} is both a file and a directory")
        elif isinstance(entry, Folder) and isinstance(tree.get(name), DirEntry):
            continue  # the folder there stays, with what it holds
        else:
            if isinstance(entry, Folder) or entry == EMPTY_DIR:
                io.save({})  # a tree the store may not hold yet
                entry = EMPTY_DIR
            tree[name] = entry
    for name, sub in nested.items():
        if isinstance(tree.get(name), (FileEntry, SymlinkEntry)):
            if all(v is None for v in sub.values()):
                continue
            raise PathConflictError(f"{shown(where + name)} is both a file and a directory")
        current = tree.get(name)
        child = _apply(io, io.load(current.tree) if isinstance(current, DirEntry) else {}, sub,
                       f"{where}{name}/")
        if child or isinstance(direct.get(name), (DirEntry, Folder)):
            size, files = summarize(child)
            tree[name] = DirEntry(io.save(child), size, files)
        else:
            tree.pop(name, None)
    return tree


def walk(io: TreeIO, root: str | None, prefix: str = "") -> Iterator[tuple[str, Leaf]]:
    """Every (path, FileEntry or SymlinkEntry) below `root`, depth first in name order."""
    for path, entry in walk_all(io, root, prefix):
        if not isinstance(entry, DirEntry):
            yield path, entry


def walk_all(io: TreeIO, root: str | None, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Like walk, and every empty folder below `root` too, as (path, EMPTY_DIR)."""
    if not root:
        return
    for name, entry in sorted(io.load(root).items()):
        path = prefix + name
        if isinstance(entry, DirEntry) and entry.tree == EMPTY_TREE:
            yield path, entry
        elif isinstance(entry, DirEntry):
            yield from walk_all(io, entry.tree, path + "/")
        else:
            yield path, entry


def same_content(a: Iterable[tuple[str, Entry]], b: Iterable[tuple[str, Entry]]) -> bool:
    """Do two listings (walk_all) hold the same paths, kinds, contents and executable
    bits (mtimes aside), and the same empty folders?  Such versions are one version
    (store-format.md 5.2)."""
    da, db = dict(a), dict(b)
    return da.keys() == db.keys() and all(e.same_content(db[p]) for p, e in da.items())


def artifact_digest(entries: Iterable[tuple[str, Leaf]]) -> str:
    """W&B's artifact digest: xxh3-128 hex over the header and 'path:digest' lines
    in path order."""
    h = xxhash.xxh3_128()
    h.update(DIGEST_HEADER.encode())
    for path, entry in sorted(entries, key=lambda pe: pe[0]):
        h.update(f"{path}:{entry.digest}\n".encode())
    return h.hexdigest()


def wandb_manifest(entries: Iterable[tuple[str, Leaf]]) -> dict:
    """The W&B manifest v1 JSON of a flat list of entries."""
    contents = {}
    for path, e in sorted(entries, key=lambda pe: pe[0]):
        item: dict = {"digest": e.digest, "size": e.size}
        if e.ref is not None:
            item["ref"] = e.ref
        item["extra"] = dict(e.extra)
        contents[path] = item
    return {
        "version": 1,
        "storagePolicy": "wandb-storage-policy-v1",
        "storagePolicyConfig": {"storageLayout": "V2"},
        "contents": contents,
    }
