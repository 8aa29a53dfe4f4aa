"""The in-memory inode of a draft, its attributes as stat(2) shows them, and the
draft's own state record.

An Inode is either *materialized* (id > 0: a row of meta.db) or *virtual*: a
base entry nobody changed yet, known only by the folder it shows in and its
name.  The first change that needs it on disk (a write, chmod, link, rename)
materializes it: the same object gets an id, so whoever holds it (the mount,
for an inode the kernel knows) keeps the same file.  Its token, the identity
the mount shows as st_ino, never changes: "i<id>" for an inode made in the
draft, or a hash of where a base entry showed, kept in its row once
materialized."""
from __future__ import annotations

import json
import stat
import threading
from dataclasses import asdict, dataclass, field

from ..chunks.digests import RunningDigest
from ..registry.manifest import FileEntry
from .meta import Row

DRAFT_FORMAT = "artifactfs-draft-v2"


@dataclass(eq=False)
class Inode:
    """One file, folder, symlink or special file of a draft.  Times are integer ns.
    For a staged regular file, size, atime and mtime are the data file's."""

    id: int
    mode: int
    uid: int
    gid: int
    nlink: int
    atime: int
    mtime: int
    ctime: int
    rdev: int = 0
    staged: bool = False
    base: FileEntry | None = None       # a regular file not staged: the bytes it shows
    tree: str | None = None             # a folder: the base sub-tree it overlays (None: plain)
    target: str | None = None           # a symlink
    parent: "Inode | None" = None       # virtual only: the folder it shows in ...
    name: str = ""                      # ... under this name
    token: str = ""                     # identity as shown (st_ino): "i<id>", or "v<hash>" from where it shows
    lock: threading.Lock = field(default_factory=threading.Lock)  # copy-up of this file, its writes
    running: RunningDigest | None = None  # the data file's digests, while written in order
    sealed: int = 0                     # chunks of a staged file kept as files of their own (datafiles.py)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def row(self) -> Row:
        return Row(self.id, self.mode, self.uid, self.gid, self.nlink, self.rdev, self.atime, self.mtime,
                   self.ctime, int(self.staged),
                   json.dumps(self.base.to_json(), sort_keys=True) if self.base is not None else None,
                   self.tree, None if self.target is None else self.target.encode("utf-8", "surrogateescape"),
                   self.token)

    @classmethod
    def of_row(cls, r: Row) -> "Inode":
        base = FileEntry.from_json(json.loads(r.base)) if r.base else None
        target = r.target.decode("utf-8", "surrogateescape") if isinstance(r.target, bytes) else r.target
        return cls(r.id, r.mode, r.uid, r.gid, r.nlink, r.atime, r.mtime, r.ctime, r.rdev, bool(r.staged),
                   base, r.tree, target, token=r.token or f"i{r.id}")


@dataclass(frozen=True)
class Attr:
    """What stat(2) shows of an inode (times in ns)."""

    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    atime: int
    mtime: int
    ctime: int


@dataclass
class DraftState:
    """The draft as a whole: its collection, base version and the attributes
    for the next commit.  `dirty` is set by the first change after a commit."""

    collection: str
    project: str
    store: str
    type: str
    base: int | None = None
    base_root: str | None = None
    base_mtime_ns: int = 0
    attrs: dict = field(default_factory=dict)
    dirty: bool = False

    def to_json(self) -> dict:
        return {"format": DRAFT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> "DraftState":
        d = dict(d)
        if d.pop("format", None) != DRAFT_FORMAT:
            raise ValueError("not an artifactfs draft")
        return cls(**d)
