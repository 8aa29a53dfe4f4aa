"""`artifactfs gc`: delete expired versions, then the blobs, packs and trees nothing live
refers to (docs/store-format.md section 5.5 has the protocol).

Live roots are the root trees of every version (and link) that is not deleted,
of deleted versions for `keep_deleted` seconds after their deletion (so
readers holding their files open keep working for that long), and the bases
of the drafts of running mounts (pins, gcstate.py).  An unreferenced object younger than `grace` seconds is kept too:
it may belong to a writer that has stored its files and not yet committed."""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ArtifactfsError, CorruptStoreError, ObjectNotFound, shown
from ..registry import gcstate
from ..registry.checks import skip_entry
from ..registry.keys import BLOBS, PACKS, TREES, tree_object_key
from ..registry.manifest import DirEntry, FileEntry, check_object_key
from ..registry.versions import Registry, VersionInfo
from .lifecycle import default_ttl, expires_at
from .links import delete as delete_artifact

log = logging.getLogger("artifactfs.gc")
GRACE = 3600.0
TEMPORARY_AGE = 3600.0  # s: a temporary file this recent may be a write in progress, whatever the grace
KEEP_DELETED = 86400.0
WAIT = 600.0
HEARTBEAT_EVERY = 30.0


@dataclass
class GcReport:
    dry_run: bool
    expired: list[str] = field(default_factory=list)   # project/collection:vN deleted for their TTL
    blobs: int = 0            # blobs removed (or that would be)
    packs: int = 0            # packs of small files removed (or that would be)
    trees: int = 0            # trees removed (or that would be)
    bytes: int = 0            # their total size
    young: int = 0            # unreferenced objects kept because younger than the grace period
    temporaries: int = 0      # files of writes killed mid-write, older than the grace period, removed
    live_versions: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _unlisted_roots(registry: Registry, listed: set[str]) -> set[str]:
    """Root trees named by version records that the registry does not list (a
    collection or record name the format cannot hold, written by something else:
    skipped with a warning everywhere else).  gc keeps what they name, as live, and
    never deletes them; a record that does not parse may name anything, so gc then
    deletes nothing (CorruptStoreError naming it)."""
    roots = set()
    for key in registry.store.list("projects/"):
        parts = key.split("/")
        if len(parts) != 6 or parts[2] != "collections" or parts[4] != "versions" \
                or not key.endswith(".json") or key.endswith(".attrs.json") or key in listed:
            continue
        try:
            root = json.loads(registry.store.get(key))["root"]
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptStoreError(f"gc deletes nothing: version record {shown(key)} does not parse ({e!r}) "
                                    "and may name objects; repair or remove it") from None
        try:
            roots.add(check_object_key(str(root)))
        except CorruptStoreError as e:  # names no tree: nothing to keep for it
            skip_entry(key, str(e))
    return roots


def _all_versions(registry: Registry) -> Iterator[tuple[VersionInfo, bool]]:
    """(version, is_deleted) for every version record of the store."""
    for project in registry.projects():
        for coll in registry.collections(project):
            gone = registry.deleted(project, coll.name)
            for n in registry.versions(project, coll.name, include_deleted=True):
                try:
                    info = registry.version(project, coll.name, n, aliases={})
                except ArtifactfsError:
                    continue  # gone since listed; a damaged record stops _unlisted_roots
                yield info, n in gone or info.deleted


def _expired(registry: Registry, now: dt.datetime) -> list[VersionInfo]:
    defaults: dict[str, float | None] = {}
    out = []
    for info, deleted in _all_versions(registry):
        if deleted:
            continue
        if info.project not in defaults:
            defaults[info.project] = default_ttl(registry, info.project)
        when = expires_at(info, defaults[info.project])
        if when is not None and when <= now:
            out.append(info)
    return out


class _Beat:
    """Keeps a sweep's heartbeat fresh during a long mark or sweep (no-op in a dry run)."""

    def __init__(self, registry: Registry, sweep: str | None):
        self.store, self.sweep, self.at = registry.store, sweep, time.monotonic()

    def __call__(self) -> None:
        if self.sweep is not None and time.monotonic() - self.at > HEARTBEAT_EVERY:
            gcstate.heartbeat(self.store, self.sweep)
            self.at = time.monotonic()


def _mark(registry: Registry, now: float, keep_deleted: float, expiring: set[tuple[str, str, int]],
          beat: _Beat) -> tuple[set[str], set[str], int]:
    """Keys of every tree and of every blob and pack reachable from a live root; and
    the live count.  `expiring` versions count as deleted now (a dry run has not
    deleted them).  A pack stays whole while any live file is in it."""
    trees: set[str] = set()
    objects: set[str] = set()
    live = 0

    def visit(key: str, needed: bool = True) -> None:
        """Mark tree `key` and what it reaches.  A missing tree is damage only
        where something `needed` it: a deleted version's trees may have been swept
        already by a gc with a shorter --keep-deleted, and are then not reported."""
        if key in trees:
            return
        trees.add(key)
        try:
            tree = registry.load(key)
        except ObjectNotFound:
            (log.warning if needed else log.debug)("tree %s is missing", key)
            return
        for entry in tree.values():
            if isinstance(entry, DirEntry):
                visit(entry.tree, needed)
            elif isinstance(entry, FileEntry):
                objects.update(entry.object_keys())

    for root in gcstate.pinned_roots(registry.store, now):  # bases of running mounts' drafts
        visit(root)
    listed: set[str] = set()
    kept: list[str] = []  # roots of deleted versions still within keep_deleted
    for info, deleted in _all_versions(registry):
        beat()
        listed.add(registry.version_key(info.project, info.collection, info.version))
        if (info.project, info.collection, info.version) in expiring:
            deleted, at = True, now
        else:
            at = dt.datetime.fromisoformat(info.deleted_at).timestamp() if info.deleted_at else 0.0
        if not deleted:
            live += 1
            visit(info.root)
        elif now - at < keep_deleted:
            kept.append(info.root)
    for root in kept + sorted(_unlisted_roots(registry, listed)):  # after every live tree is marked
        visit(root, needed=False)
    return {tree_object_key(t) for t in trees}, objects, live


def collect(registry: Registry, dry_run: bool = False, grace: float = GRACE,
            keep_deleted: float = KEEP_DELETED, wait: float = WAIT) -> GcReport:
    """Run one gc; with dry_run nothing is changed and the report says what would be."""
    report = GcReport(dry_run)
    now = dt.datetime.now(dt.timezone.utc)
    expired = _expired(registry, now)
    report.expired = [f"{v.project}/{v.name}" for v in expired]
    if not dry_run:
        for info in expired:
            delete_artifact(registry, info, delete_aliases=True)
    expiring = {(v.project, v.collection, v.version) for v in expired} if dry_run else set()
    store = registry.store
    sweep = None if dry_run else gcstate.begin_sweep(store)
    try:
        if sweep is not None:
            gcstate.wait_for_commits(store, sweep, wait)
        beat = _Beat(registry, sweep)
        started = time.time()
        trees, objects, report.live_versions = _mark(registry, started, keep_deleted, expiring, beat)
        for prefix, keep in ((TREES, trees), (BLOBS, objects), (PACKS, objects)):
            for obj in store.list_stat(prefix):
                if obj.key in keep:
                    continue
                if started - obj.mtime < grace:
                    report.young += 1
                    continue
                if sweep is not None:
                    beat()
                    store.delete(obj.key)
                report.bytes += obj.size
                if prefix == TREES:
                    report.trees += 1
                elif prefix == PACKS:
                    report.packs += 1
                else:
                    report.blobs += 1
        if sweep is not None:
            gcstate.drop_stale_markers(store, started)
            report.temporaries = store.remove_temporaries(max(grace, TEMPORARY_AGE))
    finally:
        if sweep is not None:
            gcstate.end_sweep(store, sweep)
    return report
