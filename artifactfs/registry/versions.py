"""Collections, versions, aliases, tags and attributes on an object store.

Layout (docs/store-format.md has the full description):
  artifactfs-store.json                              marker
  blobs/<2 hex>/<32 hex>                             file contents (chunks)
  trees/<2 hex>/<32 hex>                             directory objects
  projects/<p>/collections/<c>/collection.json       type, description (CAS)
  projects/<p>/collections/<c>/aliases.json          alias -> version (CAS)
  projects/<p>/collections/<c>/versions/v<N>.json    immutable version record
  projects/<p>/collections/<c>/versions/v<N>.attrs.json  mutable attributes (CAS)
  projects/<p>/collections/<c>/deleted.json          numbers of deleted versions (CAS)

Version N exists once v<N>.json exists; it is created with put_if_absent after
its blobs and trees are durable, so numbers are allocated without gaps and a
crashed writer leaves at most orphan blobs and trees."""
from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import (
    CorruptStoreError,
    InvalidNameError,
    NoStoreError,
    NotFoundError,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    UsageError,
    shown,
)
from ..store import ObjectStore, open_store
from ..timestamps import now_iso
from . import gcstate, runinfo
from .checks import check_metadata, default_entity, skip_entry
from .keys import blob_key
from .manifest import (
    DirEntry,
    check_object_key,
    same_content,
    walk_all,
)
from .names import check_alias, check_name, check_type, parse_version
from .records import ATTR_FIELDS, CollectionInfo, VersionInfo, check_record
from .treedigest import TreeDigests
from .trees import TreeStore

MARKER = "artifactfs-store.json"
STORE_FORMAT = {"format": "artifactfs-store", "version": 1}
CAS_RETRIES = 200
_REQUIRED = ("type", "root", "digest", "size", "file_count", "created_at", "commit_hash", "id")  # of a version record
log = logging.getLogger("artifactfs.registry")




class Registry(TreeStore):
    """All registry logic, written once against ObjectStore; trees come from TreeStore."""

    def __init__(self, store: ObjectStore, create: bool = False):
        super().__init__(store)
        self._check_marker(create)
        # Who produced a version that commit() is not told about (the mount sets this to
        # the process that wrote a draft); None: this process (lineage, runinfo.py).
        self.producer: Callable[[str, str], dict | None] | None = None
        self.opened_epoch = gcstate.epoch(store)  # gc generation seen at open (gcstate.py)

    @functools.cached_property
    def tree_digests(self) -> TreeDigests:
        """The W&B digest blocks of this store's trees (treedigest.py), kept as long as
        the registry: trees are immutable, so a commit hashes only what changed."""
        return TreeDigests(self)

    @classmethod
    def open(cls, url: str | None = None, create: bool = False) -> "Registry":
        return cls(open_store(url), create=create)

    def _check_marker(self, create: bool) -> None:
        self.created = False  # True once this open has made an empty store (create=True)
        try:
            marker = json.loads(self.store.get(MARKER))
        except ObjectNotFound:
            if self._holds_other_things():
                raise StoreError(f"{self.store.url} is not an artifactfs store: it holds other files "
                                 f"and no {MARKER}") from None
            if not create:
                raise NoStoreError(f"no artifactfs store at {self.store.url} "
                                 "(a command that writes, such as put, creates it)") from None
            name = default_entity(self.store.url)
            self.created = self.store.put_if_absent(MARKER, json.dumps({**STORE_FORMAT, "name": name,
                                                                        "id": uuid.uuid4().hex}).encode())
            marker = json.loads(self.store.get(MARKER))
        except PermissionError:
            raise StoreError(f"cannot read the store {self.store.url}: permission denied") from None
        except (ValueError, OSError) as e:
            raise StoreError(f"{self.store.url} is not an artifactfs store ({e})") from None
        if not isinstance(marker, dict) or marker.get("format") != STORE_FORMAT["format"]:
            raise StoreError(f"{self.store.url} is not an artifactfs store")
        if marker.get("version") != STORE_FORMAT["version"]:
            raise StoreError(f"{self.store.url}: unsupported store format version {marker.get('version')}")
        self.entity = str(marker.get("name") or "store")
        # What drafts belong to (docs/store-format.md 3.1): a store made again at the
        # same URL is another store.  Stores made before the id existed go by URL.
        self.identity = str(marker.get("id") or self.store.url)

    def _holds_other_things(self) -> bool:
        try:
            return next(iter(self.store.list("", recursive=False)), None) is not None
        except OSError as e:
            raise StoreError(f"cannot read {self.store.url}: {e.strerror}") from None

    # -- keys ----------------------------------------------------------------
    @staticmethod
    def _ckey(project: str, name: str, leaf: str = "") -> str:
        return f"projects/{project}/collections/{name}/{leaf}"

    def version_key(self, project: str, name: str, version: int, suffix: str = ".json") -> str:
        """The key of version record `v<N>.json` (or of its `suffix` sibling)."""
        return self._ckey(project, name, f"versions/v{version}{suffix}")

    # -- collections ---------------------------------------------------------
    def projects(self) -> list[str]:
        """Names of the store's projects; a folder whose name is not a valid project
        name is left out, with one warning (skip_entry)."""
        out = []
        for k in self.store.list("projects/", recursive=False):
            if k.endswith("/"):
                try:
                    out.append(check_name(k[len("projects/"):-1], "project"))
                except InvalidNameError as e:
                    skip_entry(k, str(e))
        return out

    def collections(self, project: str) -> list[CollectionInfo]:
        out = []
        prefix = f"projects/{check_name(project, 'project')}/collections/"
        for k in self.store.list(prefix, recursive=False):
            if k.endswith("/"):
                try:
                    out.append(self.collection(project, k[len(prefix):-1]))
                except NotFoundError:
                    continue  # being created: no collection.json yet
                except (InvalidNameError, CorruptStoreError) as e:
                    skip_entry(k, str(e))
        return out

    def collection(self, project: str, name: str) -> CollectionInfo:
        """One collection's record; InvalidNameError for a name the format cannot
        hold, CorruptStoreError for a collection.json that does not parse."""
        key = self._ckey(project, check_name(name, "collection name"), "collection.json")
        try:
            d = json.loads(self.store.get(key))
            return CollectionInfo(project, name, str(d["type"]), d.get("description"), str(d["created_at"]),
                                  bool(d.get("portfolio", False)))
        except ObjectNotFound:
            raise NotFoundError(f"collection {project}/{name} not found") from None
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptStoreError(f"{shown(key)} is not a collection record ({e!r})") from None

    def ensure_collection(self, project: str, name: str, type_: str, portfolio: bool = False) -> CollectionInfo:
        """Create the collection if needed; refuse a type different from its own, and
        a portfolio where a collection of logged versions is (or the reverse)."""
        check_name(project, "project")
        check_name(name, "collection name")
        check_type(type_)
        body = {"name": name, "type": type_, "description": None, "created_at": now_iso()}
        if portfolio:
            body["portfolio"] = True
        self.store.put_if_absent(self._ckey(project, name, "collection.json"), json.dumps(body).encode())
        info = self.collection(project, name)
        if info.type != type_:
            raise UsageError(f"collection {name} has type {info.type!r}, not {type_!r}")
        if info.portfolio != portfolio:
            what = "a portfolio (of links)" if info.portfolio else "a collection of logged versions, not a portfolio"
            raise UsageError(f"collection {project}/{name} is {what}")
        return info

    # -- versions ------------------------------------------------------------
    def versions(self, project: str, name: str, include_deleted: bool = False) -> list[int]:
        """Version numbers in ascending order; deleted ones only when asked."""
        prefix = self._ckey(project, name, "versions/")
        out = []
        for k in self.store.list(prefix, recursive=False):
            leaf = k[len(prefix):]
            if leaf.endswith(".json") and not leaf.endswith(".attrs.json"):
                n = parse_version(leaf[:-5])
                if n is not None and leaf == f"v{n}.json":
                    out.append(n)
                else:  # v007.json, notes.json: v<N>.json is the only spelling (store-format.md)
                    skip_entry(k, "not a version record name (v<N>.json)")
        if not include_deleted and out:
            gone = self.deleted(project, name)
            out = [n for n in out if n not in gone]
        return sorted(out)

    def deleted(self, project: str, name: str) -> set[int]:
        """Numbers of the collection's deleted versions (deleted.json, lifecycle.py)."""
        key = self._ckey(project, name, "deleted.json")
        try:
            return {int(n) for n in json.loads(self.store.get(key))["versions"]}
        except ObjectNotFound:
            return set()
        except (ValueError, KeyError, TypeError) as e:  # gc then keeps them all: conservative
            skip_entry(key, f"not a list of deleted versions ({e!r}); taken as none")
            return set()

    def latest(self, project: str, name: str) -> int | None:
        vs = self.versions(project, name)
        return vs[-1] if vs else None

    def aliases(self, project: str, name: str) -> dict[str, int]:
        """alias -> version, 'latest' included.  An entry that is not a valid alias
        naming a version number (written by something else) is left out, with one
        warning (skip_entry)."""
        key = self._ckey(project, name, "aliases.json")
        try:
            d = json.loads(self.store.get(key))
        except ObjectNotFound:
            d = {}
        except ValueError as e:
            skip_entry(key, f"not JSON ({e})")
            d = {}
        out = {}
        for alias, n in (d.items() if isinstance(d, dict) else ()):
            try:
                check_alias(alias)
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise InvalidNameError(f"alias {alias!r} names {n!r}, not a version number")
            except InvalidNameError as e:
                skip_entry(f"{key} [{alias!r}]", str(e))
                continue
            out[alias] = n
        latest = self.latest(project, name)
        if latest is not None:
            out["latest"] = latest
        return out

    def _aliases_damage(self, project: str, name: str) -> str:
        """'' or why the collection's aliases.json was ignored (for a message)."""
        key = self._ckey(project, name, "aliases.json")
        try:
            if isinstance(json.loads(self.store.get(key)), dict):
                return ""
            return f" (the aliases record {shown(key)} is damaged: not a JSON object)"
        except ObjectNotFound:
            return ""
        except ValueError:
            return f" (the aliases record {shown(key)} is damaged: not JSON)"

    def resolve(self, project: str, name: str, alias: str | None) -> int:
        """'vN', an alias or None (latest) -> the version number."""
        self.collection(project, name)
        alias = alias or "latest"
        n = parse_version(alias)
        if n is not None:
            if not self.store.exists(self.version_key(project, name, n)):
                raise NotFoundError(f"version {name}:{alias} not found")
            if n in self.deleted(project, name):
                raise NotFoundError(f"version {name}:{alias} was deleted")
            return n
        found = self.aliases(project, name).get(alias)
        if found is None or (alias != "latest" and found in self.deleted(project, name)):
            raise NotFoundError(f"alias {name}:{alias} not found{self._aliases_damage(project, name)}")
        return found

    def version(self, project: str, name: str, version: int,
                aliases: Mapping[str, int] | None = None) -> VersionInfo:
        """One version.  Pass `aliases` (from aliases()) when reading many versions
        of a collection, so the collection is not listed again for each."""
        key = self.version_key(project, name, version)
        try:
            rec = check_record(json.loads(self.store.get(key)), _REQUIRED)
            info = VersionInfo(
                project=project, collection=name, version=version, type=rec["type"],
                root=check_object_key(str(rec["root"])),
                digest=rec["digest"], size=rec["size"], file_count=rec["file_count"],
                created_at=rec["created_at"], commit_hash=rec["commit_hash"], id=rec["id"],
                base=rec.get("base"), description=rec.get("description"),
                metadata=rec.get("metadata") or {}, tags=list(rec.get("tags") or []), ttl=rec.get("ttl"),
                link=rec.get("link"), run=rec.get("run"),
            )
        except ObjectNotFound:
            raise NotFoundError(f"version {name}:v{version} not found") from None
        except json.JSONDecodeError as e:
            raise CorruptStoreError(f"version record {shown(key)} is damaged: not JSON ({e})") from None
        except (ValueError, KeyError, TypeError, CorruptStoreError) as e:
            raise CorruptStoreError(f"version record {shown(key)} is damaged: {e}") from None
        attrs_key = self.version_key(project, name, version, ".attrs.json")
        try:
            attrs = check_record(json.loads(self.store.get(attrs_key)))
            for f in ATTR_FIELDS:
                if f in attrs:
                    setattr(info, f, attrs[f])
        except ObjectNotFound:
            pass
        except (ValueError, TypeError) as e:  # the record alone, as before any attribute was set
            skip_entry(attrs_key, f"not an attributes record ({e!r})")
        if aliases is None:
            aliases = self.aliases(project, name)
        info.aliases = sorted(a for a, v in aliases.items() if v == version)
        return info

    def version_infos(self, project: str, name: str) -> list[VersionInfo]:
        """Every version that is not deleted, oldest first; a record that does not
        parse is left out with one warning (skip_entry), so the others still list."""
        aliases = self.aliases(project, name)
        out = []
        for n in self.versions(project, name):
            try:
                out.append(self.version(project, name, n, aliases))
            except CorruptStoreError as e:
                skip_entry(self.version_key(project, name, n), str(e))
            except NotFoundError:
                continue  # deleted since listed
        return out

    def get(self, project: str, name: str, alias: str | None = None) -> VersionInfo:
        """The version `alias` ('vN', an alias, None: latest) names.  CorruptStoreError
        (one line naming the damaged record) when its record is damaged."""
        n = self.resolve(project, name, alias)
        try:
            return self.version(project, name, n)
        except CorruptStoreError as e:
            if parse_version(alias or "latest") is not None:
                raise
            raise CorruptStoreError(f"{name}:{alias or 'latest'} is v{n}, whose {e}; other versions are "
                                    "unaffected") from None

    def commit(
        self, project: str, name: str, type_: str, root: DirEntry, digest: str, *,
        description: str | None = None, metadata: Mapping[str, Any] | None = None,
        aliases: list[str] = (), tags: list[str] = (), ttl: float | None = None,
        base: int | None = None, created_at: str | None = None, exact_base: bool = False,
        run: dict | None = None, epoch: int | None = None,
    ) -> tuple[VersionInfo, bool]:
        """Publish a new version whose trees and blobs have been put; returns
        (version, created).  Content equal to latest (same paths, kinds, bytes and
        executable bits; mtimes aside) returns latest unchanged (aliases and tags
        are still applied to it).  With exact_base the new version
        must directly follow `base` (a rebasing writer): PreconditionFailed otherwise.
        `run` is the producer's run record (default: self.producer, else this process);
        `epoch` the gc generation read before the caller's first object write or
        existence check (default: the one seen at open).  Raises gcstate.ObjectsSwept
        when a gc that ran since removed objects the new root needs (docs/store-format.md 5.5)."""
        metadata = check_metadata(metadata)
        for a in aliases:
            check_alias(a, name)
        for t in tags:
            check_name(t, "tag")
        self.ensure_collection(project, name, type_)
        with gcstate.in_flight(self.store) as seen:
            every = self.versions(project, name, include_deleted=True)  # one listing: see publish()
            gone = self.deleted(project, name) if every else set()
            live = [v for v in every if v not in gone]
            latest = live[-1] if live else None
            if exact_base and latest != base:
                raise PreconditionFailed(f"{name}: latest is v{latest}, not v{base}")
            if latest is not None:
                current = self.version(project, name, latest)
                if current.digest == digest and (current.root == root.tree or same_content(
                        walk_all(self, current.root), walk_all(self, root.tree))):
                    self._label(project, name, latest, aliases, tags)
                    return self.version(project, name, latest), False
            self.store.sync()  # blobs and trees durable before the record names them
            if seen != (self.opened_epoch if epoch is None else epoch):
                base_root = self._live_root(project, name, base)
                gcstate.check_present(self, self.store, root.tree, base_root)
            if run is None and self.producer is not None:
                run = self.producer(project, name)
            record = {
                "format": "artifactfs-version-v1", "type": type_, "root": root.tree, "digest": digest,
                "size": root.size, "file_count": root.files, "created_at": created_at or now_iso(),
                "commit_hash": uuid.uuid4().hex[:20], "id": uuid.uuid4().hex, "base": base,
                "description": description, "metadata": metadata, "tags": sorted(set(tags)), "ttl": ttl,
                "run": run if run is not None else runinfo.current_run().to_json(),
            }
            n = self.publish(project, name, record, every[-1] + 1 if every else 0, fail_on_race=exact_base)
        self._label(project, name, n, aliases, ())
        return self.version(project, name, n), True

    def _live_root(self, project: str, name: str, base: int | None) -> str | None:
        """The root tree of version `base` while it is not deleted (gc keeps it), else None."""
        if base is None:
            return None
        try:
            info = self.version(project, name, base, aliases={})
        except NotFoundError:
            return None
        return None if info.deleted or base in self.deleted(project, name) else info.root

    def publish(self, project: str, name: str, record: dict, start: int | None = None,
                fail_on_race: bool = False) -> int:
        """Create the record as number `start` (default: above the highest record, deleted
        or not: numbers are never reused), or the next free one after it; the single
        put_if_absent is the commit point.  With fail_on_race, `start` must be free
        (PreconditionFailed otherwise: the caller saw latest in the listing `start`
        came from, and must rebase).  Returns the number."""
        if start is None:
            every = self.versions(project, name, include_deleted=True)
            start = every[-1] + 1 if every else 0
        n = start
        while True:
            record["version"] = n
            if self.store.put_if_absent(self.version_key(project, name, n), json.dumps(record).encode()):
                return n
            if fail_on_race:
                raise PreconditionFailed(f"{name}: v{n} was published concurrently")
            n += 1

    def _label(self, project: str, name: str, version: int, aliases, tags) -> None:
        for a in aliases:
            if a != "latest":
                self.set_alias(project, name, a, version)
        if tags:
            self.update_attrs(project, name, version, lambda d: d.update(tags=sorted(set(d["tags"]) | set(tags))))

    # -- mutable state, all compare-and-swap -----------------------------------
    def set_alias(self, project: str, name: str, alias: str, version: int | None) -> None:
        """Point `alias` at `version` (None removes it).  'latest' is managed.
        InvalidNameError for an alias the mount could not show (names.check_alias)."""
        check_alias(alias, name if version is not None else None)
        if alias == "latest":
            raise UsageError("the alias 'latest' always points at the newest version and cannot be changed")
        if version is not None:
            self.version(project, name, version)  # must exist

        def change(d: dict) -> dict:
            if version is None:
                if alias not in d:
                    raise NotFoundError(f"alias {name}:{alias} not found")
                d.pop(alias)
            else:
                d[alias] = version
            return d
        self._cas_json(self._ckey(project, name, "aliases.json"), change)

    def update_attrs(self, project: str, name: str, version: int, change: Callable[[dict], None]) -> VersionInfo:
        """Apply `change` to the version's mutable attributes (description,
        metadata, tags, ttl, state) under compare-and-swap."""
        info = self.version(project, name, version)
        initial = {f: getattr(info, f) for f in ATTR_FIELDS}

        def wrapped(d: dict) -> dict:
            d = {**initial, **d}
            change(d)
            d["metadata"] = check_metadata(d["metadata"])
            for t in d["tags"]:
                check_name(t, "tag")
            d["tags"] = sorted(set(d["tags"]))
            d["updated_at"] = now_iso()
            return d
        self._cas_json(self.version_key(project, name, version, ".attrs.json"), wrapped)
        return self.version(project, name, version)

    def _cas_json(self, key: str, change: Callable[[dict], dict], must_exist: bool = False) -> dict:
        for attempt in range(CAS_RETRIES):
            try:
                data, etag = self.store.get_versioned(key)
                current = json.loads(data)
            except ObjectNotFound:
                if must_exist:
                    raise NotFoundError(f"{key} not found") from None
                current, etag = {}, None
            new = change(current)
            try:
                self.store.compare_and_swap(key, json.dumps(new, sort_keys=True).encode(), etag)
                return new
            except PreconditionFailed:
                time.sleep(min(0.001 * 2 ** min(attempt, 6), 0.05))
        raise StoreError(f"could not update {key}: too much contention")

    # -- blobs ---------------------------------------------------------------
    def put_blob(self, hexdigest: str, data: bytes) -> bool:
        """Store a blob unless present; True if it was written."""
        return self.store.put_new(blob_key(hexdigest), data)

    def get_blob(self, hexdigest: str) -> bytes:
        return self.store.get(blob_key(hexdigest))

