"""`Artifact`: the W&B-shaped Python API over the registry (see the seed reference)."""
from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..chunks import download, references, upload, verify
from ..errors import (
    ArtifactFinalizedError,
    ArtifactfsError,
    ArtifactNotLoggedError,
    LocalFileError,
    UsageError,
    shown,
)
from ..registry.checks import check_metadata
from ..registry.gcstate import ObjectsSwept, epoch
from ..registry.manifest import FOLDER, Change, DirEntry, Folder, Leaf, apply_changes, artifact_digest, walk, walk_all
from ..registry.names import check_name, check_type, normalize_path
from ..registry.versions import Registry, VersionInfo
from ..store import default_store_url
from . import localtree
from .artifact_lifecycle import ArtifactLifecycle
from .entries import Manifest, ManifestEntry
from .localtree import LocalDir, LocalFile
from .typed import TypedObjects

POLICIES = ("mutable", "immutable")
SWEPT_RETRIES = 4  # commits again after a concurrent gc removed files it needed (gcstate.py)


def default_project() -> str:
    return os.environ.get("ARTIFACTFS_PROJECT") or "default"


class Artifact(ArtifactLifecycle, TypedObjects):
    """A draft (PENDING) until save(); then an immutable logged version whose
    aliases, tags, description, metadata and ttl can still be changed and saved."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: dict[str, Any] | None = None, *, store: str | None = None) -> None:
        self._collection = check_name(name, "artifact name")
        self._type = check_type(type)
        self.description = description
        self._metadata = check_metadata(metadata)
        self._store_url = store or default_store_url()
        self._registry: Registry | None = None
        self._project: str | None = None
        self._info: VersionInfo | None = None   # set once logged
        self._base: VersionInfo | None = None   # set for an incremental draft
        self._changes: dict[str, Change] = {}  # path -> new file, symlink, FOLDER (empty), or None: removed
        self._local: dict[str, str] = {}
        self._finalized = False
        self.created = False  # did the last save() make a new version (False: equal to latest)
        self.aliases: list[str] = []
        self.tags: list[str] = []
        self._ttl: _dt.timedelta | None = None
        self._ttl_inherited = True  # no TTL set: the project's default applies (W&B)

    # -- construction from the store -----------------------------------------
    @classmethod
    def _from_version(cls, registry: Registry, info: VersionInfo) -> "Artifact":
        art = cls.__new__(cls)
        art._collection, art._type = info.collection, info.type
        art._store_url, art._registry, art._project = registry.store.url, registry, info.project
        art._base, art._changes, art._local, art.created = None, {}, {}, False
        art._load(info)
        return art

    def _load(self, info: VersionInfo) -> None:
        self._info, self._finalized = info, True
        self.description = info.description
        self._metadata = dict(info.metadata)
        self.aliases = [a for a in info.aliases]
        self.tags = list(info.tags)
        self._load_ttl(info)

    def _reg(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.open(self._store_url, create=True)
        return self._registry

    @property
    def _logged(self) -> bool:
        return self._info is not None

    def _need_logged(self, what: str) -> VersionInfo:
        if self._info is None:
            raise ArtifactNotLoggedError(f"{what} needs a logged artifact; call save() first")
        return self._info

    def _need_draft(self) -> None:
        if self._finalized:
            raise ArtifactFinalizedError(
                f"artifact {self.name} is finalized; use new_draft() to change its files")

    # -- identity ------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self._collection}:v{self._info.version}" if self._info else self._collection

    @property
    def version(self) -> str:
        return f"v{self._need_logged('version').version}"

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def project(self) -> str:
        return self._info.project if self._info else (self._project or default_project())

    @property
    def entity(self) -> str:
        return self._reg().entity

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"

    @property
    def type(self) -> str:
        return self._type

    @property
    def id(self) -> str | None:
        return self._info.id if self._info else None

    @property
    def commit_hash(self) -> str:
        return self._need_logged("commit_hash").commit_hash

    @property
    def url(self) -> str:
        info = self._need_logged("url")
        return f"{self._reg().store.url}/projects/{info.project}/collections/{info.collection}/versions/v{info.version}.json"

    @property
    def state(self) -> str:
        return self._info.state if self._info else "PENDING"

    @property
    def created_at(self) -> str:
        return self._need_logged("created_at").created_at

    @property
    def updated_at(self) -> str | None:
        info = self._need_logged("updated_at")
        return info.updated_at or info.created_at

    @property
    def metadata(self) -> dict:
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict) -> None:
        self._metadata = check_metadata(value)

    # -- contents ------------------------------------------------------------
    def _entries(self) -> dict[str, Leaf]:
        """The flat view: path -> entry, base version plus pending changes."""
        out: dict[str, Leaf] = {}
        source = self._info or self._base
        if source is not None:
            out.update(walk(self._reg(), source.root))
        for path, entry in self._changes.items():
            if entry is None:
                out.pop(path, None)
            elif not isinstance(entry, (DirEntry, Folder)):
                out[path] = entry
        return out

    def _entry(self, path: str) -> Leaf:
        source = self._info or self._base
        entry = self._changes[path] if path in self._changes else (
            self._reg().lookup(source.root, normalize_path(path)) if source is not None else None)
        if entry is None or isinstance(entry, (DirEntry, Folder)):
            raise KeyError(f"path {path!r} is not in artifact {self.name}")
        return entry

    def _download_one(self, path: str, root: str | None) -> str:
        """ManifestEntry.download(): one file under root (default: the default root)."""
        if not self._logged:
            raise ArtifactNotLoggedError("entry.download() needs a logged artifact")
        root = root or self._default_root()
        download.download_many(self._reg(), root, [(path, self._entry(path))])
        self._used(self._need_logged("download()"))
        return os.path.join(root, path)

    @property
    def manifest(self) -> Manifest:
        return Manifest(self._entries())

    def json_encode(self) -> dict:
        """W&B's encoding (wandb.util.artifact_to_json): {'_type': 'artifactVersion', '_version': 'v0',
        'id', 'version': 'vN', 'sequenceName': source collection, 'usedAs': None}; logged versions only
        (ArtifactNotLoggedError, as W&B).  The manifest v1 JSON is `manifest.to_manifest_json()`."""
        info = self._need_logged("json_encode")
        return {"_type": "artifactVersion", "_version": "v0", "id": info.id, "version": self.source_version,
                "sequenceName": self.source_name.split(":")[0], "usedAs": None}

    @property
    def digest(self) -> str:
        return self._info.digest if self._info else self.manifest.digest()

    @property
    def size(self) -> int:
        return self._info.size if self._info else sum(e.size for e in self._entries().values())

    @property
    def file_count(self) -> int:
        return self._info.file_count if self._info else len(self._entries())

    def is_draft(self) -> bool:
        return not self._logged

    def finalize(self) -> None:
        """Forbid further changes to the files (save() does this too)."""
        self._finalized = True

    def new_draft(self) -> "Artifact":
        """An incremental draft of this logged version: unchanged files are not
        hashed or stored again."""
        info = self._need_logged("new_draft()")
        draft = Artifact(self._collection, self._type, self.description, dict(self._metadata),
                         store=self._reg().store.url)
        draft._registry, draft._project, draft._base = self._reg(), info.project, info
        return draft

    def _stage(self, path: str, entry: Leaf, local: str | None, overwrite: bool) -> None:
        try:
            existing = self._entry(path)
        except KeyError:
            existing = None
        if existing is not None and existing.digest != entry.digest and not overwrite:
            raise UsageError(f"{path} is already in the artifact with different content; "
                             "pass overwrite=True (add_file) or merge=True (add_dir)")
        self._changes[path] = entry
        if local is None:
            self._local.pop(path, None)
        else:
            self._local[path] = local

    def add_file(self, local_path: str, name: str | None = None, is_tmp: bool | None = False,
                 skip_cache: bool | None = False, policy: str = "mutable", overwrite: bool = False) -> ManifestEntry:
        """Add one local file (hashed and stored now) under `name` (default: its basename).
        is_tmp: the name's part before its first dot becomes the first 20 hex digits
        of the file's digest, so that temporary files of one name do not collide
        (W&B's rule, with our XXH3-128 digest: `tmp.json` -> `<20 hex>.json`)."""
        self._need_draft()
        _check_policy(policy)
        if not os.path.isfile(local_path):
            raise ArtifactfsError(f"cannot add {local_path}: not a file or not found")
        path = normalize_path(name or os.path.basename(local_path))
        entry = upload.upload_file(self._reg(), local_path)
        if is_tmp:
            folder, _, base = path.rpartition("/")
            stem = base64.b64decode(entry.digest).hex()[:20]
            path = "/".join(filter(None, [folder, ".".join([stem, *base.split(".")[1:]])]))
        self._stage(path, entry, os.path.abspath(local_path), overwrite)
        return self._manifest_entry(path, entry)

    def add_dir(self, local_path: str, name: str | None = None, skip_cache: bool | None = False,
                policy: str = "mutable", merge: bool = False,
                progress: Callable[[int], None] | None = None, *, follow_symlinks: bool = True) -> None:
        """Add every file below a local directory, with its executable bit and mtime.

        follow_symlinks (not in W&B): True, the default, does what wandb's add_dir
        does (os.walk(followlinks=True)): a symlink adds what it points to, and a
        linked folder is entered.  False keeps each symlink as a symlink entry
        (its target), as `artifactfs put` does by default.  LocalFileError (one
        line naming the path) for an unreadable file or folder, a dangling or
        looping link; InvalidNameError for a name the format cannot hold."""
        self._need_draft()
        _check_policy(policy)
        if not os.path.isdir(local_path):
            raise ArtifactfsError(f"cannot add {local_path}: not a directory or not found")
        prefix = normalize_path(name) + "/" if name else ""
        found = list(localtree.scan(os.path.abspath(local_path), prefix, follow_symlinks))
        uploaded = iter(upload.upload_many(self._reg(), [f.full for f in found if isinstance(f, LocalFile)],
                                             progress))
        for item in found:
            if isinstance(item, LocalDir):  # an empty folder (store-format.md 8)
                self._changes.setdefault(item.path, FOLDER)
            else:
                self._stage(item.path, next(uploaded) if isinstance(item, LocalFile) else item.entry, item.full,
                            merge)

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[ManifestEntry]:
        """Add entries whose bytes stay at `uri` (file://, http(s)://, s3://; any other
        scheme records the URI only); nothing is uploaded.  See references.py for what
        each scheme records; raises ReferenceGone for a source that does not exist."""
        self._need_draft()
        added = references.resolve(uri, name, checksum, max_objects)
        for r in added:
            self._stage(r.path, r.entry, None, overwrite=False)
        return [self._manifest_entry(r.path, r.entry) for r in added]

    @contextlib.contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO]:
        """Open a new temporary file that is added to the artifact when closed."""
        self._need_draft()
        path = normalize_path(name)
        if path in self._entries():
            raise UsageError(f"{path} is already in the artifact")
        tmpdir = tempfile.mkdtemp(prefix="artifactfs-new-file-")
        local = os.path.join(tmpdir, os.path.basename(path))
        try:
            with open(local, mode, encoding=encoding) as f:
                yield f
            self.add_file(local, path)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def remove(self, item: str | ManifestEntry) -> None:
        """Remove a file, or a folder and everything below it, from the draft."""
        self._need_draft()
        path = normalize_path(item.path if isinstance(item, ManifestEntry) else item)
        source = self._info or self._base
        hits = [p for p, e in [*self._entries().items(), *self._changes.items()]  # files, empty folders
                if e is not None and (p == path or p.startswith(path + "/"))]
        if source is not None and isinstance(self._reg().lookup(source.root, path), DirEntry):
            hits.append(path)  # the folder itself: its empty folders go too
        if not hits:
            raise FileNotFoundError(f"{path} is not in the artifact")
        for p in hits:
            self._changes[p] = None
            self._local.pop(p, None)

    def _manifest_entry(self, path: str, e: Leaf) -> ManifestEntry:
        return ManifestEntry(path, e.digest, e.size, e.ref, dict(e.extra), self._local.get(path),
                             self._download_one)

    def get_entry(self, name: str) -> ManifestEntry:
        self._need_logged("get_entry()")
        path = normalize_path(name)
        return self._manifest_entry(path, self._entry(path))

    def get_added_local_path_name(self, local_path: str) -> str | None:
        """The artifact path under which a local file was added, or None."""
        full = os.path.abspath(local_path)
        return next((p for p, lp in self._local.items() if lp == full), None)

    def files(self, names: list[str] | None = None, per_page: int = 50) -> list[ManifestEntry]:
        """The artifact's files (W&B: an iterator of `File`; here a list of entries,
        each with the `name`, `size` and `download()` a File has), all or those
        `names` (paths from the root); per_page is accepted and unused.
        ArtifactNotLoggedError unless logged."""
        self._need_logged("files()")
        entries = self._entries()
        wanted = sorted(entries) if names is None else [normalize_path(n) for n in names]
        return [self._manifest_entry(p, entries[p]) for p in wanted if p in entries]

    # -- saving --------------------------------------------------------------
    def save(self, project: str | None = None) -> "Artifact":
        """Commit a draft as the next version (a no-op when its content equals
        latest), or persist changed aliases, tags, description, metadata and ttl
        of a logged version."""
        reg = self._reg()
        ttl = self._stored_ttl()
        if self._info is not None:
            return self._save_attributes(reg, ttl)
        project = check_name(project or self._project or default_project(), "project")
        root_key = self._base.root if self._base else None
        seen: int | None = None
        for attempt in range(SWEPT_RETRIES + 1):
            root = apply_changes(reg, root_key, self._changes)
            digest = artifact_digest(walk(reg, root.tree))
            try:
                info, self.created = reg.commit(
                    project, self._collection, self._type, root, digest,
                    description=self.description, metadata=self._metadata, aliases=list(self.aliases),
                    tags=list(self.tags), ttl=ttl, base=self._base.version if self._base else None,
                    epoch=seen)
                break
            except ObjectsSwept as e:
                if attempt == SWEPT_RETRIES:
                    raise
                seen = epoch(reg.store)  # noted before the files are stored again
                self._store_again(e.blobs)
        self._changes, self._base, self._project = {}, None, project
        self._load(info)
        return self

    def _save_attributes(self, reg: Registry, ttl: float | None) -> "Artifact":
        info = self._info
        assert info is not None
        desc, meta, tags = self.description, check_metadata(self._metadata), set(self.tags)
        old_meta, old_tags = info.metadata, set(info.tags)

        def change(d: dict) -> None:
            """Apply only what this object changed since it was loaded, so that
            concurrent writers' changes are merged rather than overwritten."""
            if desc != info.description:
                d["description"] = desc
            if ttl != info.ttl:
                d["ttl"] = ttl
            merged = {k: v for k, v in d["metadata"].items() if k in meta or k not in old_meta}
            merged.update({k: v for k, v in meta.items() if k not in old_meta or old_meta[k] != v})
            d["metadata"] = merged
            d["tags"] = sorted((set(d["tags"]) - (old_tags - tags)) | (tags - old_tags))
        reg.update_attrs(info.project, info.collection, info.version, change)
        wanted = set(self.aliases) - {"latest"}
        for a in sorted(wanted - set(info.aliases)):
            reg.set_alias(info.project, info.collection, a, info.version)
        for a in sorted(set(info.aliases) - wanted - {"latest"}):
            reg.set_alias(info.project, info.collection, a, None)
        self._load(reg.version(info.project, info.collection, info.version))
        return self

    def wait(self, timeout: int | None = None) -> "Artifact":
        """save() is synchronous; kept for API compatibility."""
        self._need_logged("wait()")
        return self

    # -- reading -------------------------------------------------------------
    def _default_root(self) -> str:
        return os.path.join(".", "artifacts", self.name.replace(":", "-"))

    def download(self, root: str | None = None, allow_missing_references: bool = False,
                 skip_cache: bool | None = None, path_prefix: str | None = None,
                 multipart: bool | None = None,
                 progress: Callable[[int], None] | None = None) -> str:
        """Write the files (mtimes set) and symlinks into root; other files there
        are left alone.  path_prefix selects entries whose path starts with it,
        compared as a raw string, as W&B does: 'a/b' also selects 'a/b.txt' and
        'a/bb/c'; 'a/b/' only the folder (the CLI's `get --prefix` means the
        folder).  Never writes through a symlink (store-format.md 8);
        LocalFileError names a local path that could not be written."""
        self._need_logged("download()")
        return self._download(root or self._default_root(),
                              lambda p: not path_prefix or p.startswith(path_prefix), progress,
                              allow_missing_references)

    def _download(self, root: str, selected: Callable[[str], bool],
                  progress: Callable[[int], None] | None = None,
                  allow_missing_references: bool = False) -> str:
        info = self._need_logged("download()")
        items = [(p, e) for p, e in walk_all(self._reg(), info.root) if selected(p)]  # empty folders too
        if allow_missing_references:  # W&B: skip references whose source is gone
            items = [(p, e) for p, e in items if getattr(e, "ref", None) is None or references.exists(e)]
        download.download_many(self._reg(), root, items, progress)
        self._used(info)
        return root

    def checkout(self, root: str | None = None) -> str:
        """Make root exactly the artifact: download, then delete every other file or
        symlink (never following one) and empty folder that the version does not hold."""
        root, tree = self.download(root), walk_all(self._reg(), self._need_logged("checkout()").root)
        keep = set(self._entries())
        folders = {os.path.join(root, p) for p, e in tree if isinstance(e, DirEntry)}
        for rel in list(localtree.leaves(root)):
            if rel not in keep:
                try:
                    os.unlink(os.path.join(root, rel))
                except OSError as e:
                    raise LocalFileError("remove", os.path.join(root, rel), e) from None
        for dirpath, _, _ in os.walk(root, topdown=False):
            try:
                if dirpath != root and dirpath not in folders and not os.listdir(dirpath):
                    os.rmdir(dirpath)
            except OSError as e:
                raise LocalFileError("remove", dirpath, e) from None
        return root

    def verify(self, root: str | None = None) -> None:
        """Raise ValueError unless root holds exactly the artifact's files."""
        info = self._need_logged("verify()")
        root = root or self._default_root()
        entries = self._entries()
        problems = verify.verify_dir(root, sorted(entries.items()))
        problems += [f"{shown(rel)}: not in {info.name}" for rel in localtree.leaves(root) if rel not in entries]
        if problems:
            raise UsageError(f"{root} does not match {self.name}: " + "; ".join(sorted(problems)))

    def file(self, root: str | None = None) -> str:
        """Download a single-file artifact and return the file's path."""
        self._need_logged("file()")
        entries = self._entries()
        if len(entries) != 1:
            raise UsageError(f"file() needs an artifact with exactly one file; {self.name} has {len(entries)}")
        root = self.download(root)
        return os.path.join(root, next(iter(entries)))

    def __repr__(self) -> str:
        return f"<Artifact {self.name} type={self._type} state={self.state}>"


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise UsageError(f"policy must be one of {POLICIES}, not {policy!r}")
