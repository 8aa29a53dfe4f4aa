"""Turning a draft into a version.

1. scan: walk only what is on disk in the draft (base entries left alone are not);
   placeholders and lazy folders give their base entries for free, so only real
   (written) files are hashed, and
   even those are skipped when their stamp (inode, size, mtime, ctime) matches the
   entry recorded at the previous commit.  The result is the set of changes relative
   to the base: path -> FileEntry, DirEntry (a moved lazy folder: a sub-tree graft)
   or None (removed).
2. rebase: if another writer committed since the base, each changed path is checked
   against the current latest; a path changed on both sides (differently) is a
   ConflictError naming the paths, and the draft is left untouched.
3. publish with Registry.commit(exact_base=True): the version number must directly
   follow the latest we rebased onto, otherwise we rebase again.
4. only once the version is durable, the draft advances to it (draftadvance.py).
A process killed anywhere leaves no version or a complete one, and the draft as it was
(or advanced, if the version was complete)."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from . import transfer
from .draftadvance import advance
from .draftstate import STATE_FILE, DraftState
from .errors import ConflictError, InvalidNameError, PreconditionFailed
from .manifest import Change, DirEntry, Entry, FileEntry, apply_changes
from .names import check_name
from .registry import Registry, VersionInfo
from .staging import Draft
from .timestamps import iso_ns
from .standins import Fetch, is_internal, is_placeholder, join, lazy_of, read_placeholder, whiteout_name
from .treedigest import TreeDigests

COMMIT_ATTEMPTS = 50
CONFLICT_PATHS_SHOWN = 10


@dataclass(frozen=True)
class RealFile:
    path: str
    disk: str
    st: os.stat_result
    base: Entry | None


@dataclass
class CommitResult:
    """What a commit did; `changed` lists draft paths whose content moved with the base."""

    collection: str
    version: int
    created: bool
    changes: int
    changed: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"{self.collection}:v{self.version}" + ("" if self.created else " (unchanged)")


def scan(draft: Draft) -> tuple[dict[str, Change], list[RealFile]]:
    """Changes of the draft relative to its base, except real files (returned to be
    hashed).  Only what is on disk is read: base entries left alone are not."""
    changes: dict[str, Change] = {}
    reals: list[RealFile] = []
    _scan_dir(draft, draft.tree, "", draft.state.base_root, changes, reals)
    return changes, reals


def _same(a: Entry | None, b: Entry | None) -> bool:
    """The same entry for merging: equal trees, or files equal but for their mtimes."""
    if a is None or b is None or isinstance(a, DirEntry) or isinstance(b, DirEntry):
        return isinstance(a, DirEntry) and isinstance(b, DirEntry) and a.tree == b.tree or a is b is None
    return a.same_content(b)


def _scan_dir(draft: Draft, disk: str, prefix: str, base_key: str | None,
              changes: dict[str, Change], reals: list[RealFile]) -> None:
    """One folder on disk whose version content is the tree base_key."""
    lazy = lazy_of(disk)
    ref = base_key
    if lazy is not None and lazy.tree != base_key:
        ref = lazy.tree  # a folder moved here: a graft, then its own changes
        if prefix:
            changes[prefix] = lazy
        else:  # the root's base moved (only after an interrupted advance): top-level changes
            now = draft.io.load(lazy.tree)
            was = draft.io.load(base_key) if base_key else {}
            changes.update({n: now.get(n) for n in set(now) | set(was) if not _same(now.get(n), was.get(n))})
    base = draft.io.load(ref) if ref else {}
    with os.scandir(disk) as it:
        found = sorted(it, key=lambda de: de.name)
    names = {de.name for de in found}
    seen = set()
    for de in found:
        if is_internal(de.name):
            continue
        path, b = join(prefix, de.name), base.get(de.name)
        st = de.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if isinstance(b, FileEntry):
                changes[path] = None
            _scan_dir(draft, de.path, path, b.tree if isinstance(b, DirEntry) else None, changes, reals)
        elif is_placeholder(st):
            entry = read_placeholder(de.path, st)
            if entry != b:
                changes[path] = entry
        elif stat.S_ISREG(st.st_mode):
            reals.append(RealFile(path, de.path, st, b))
        else:
            continue  # the mount never creates other kinds; they are not part of a draft
        seen.add(de.name)
    for name in sorted(set(base) - seen):
        if lazy is None or whiteout_name(name) in names:
            changes[join(prefix, name)] = None


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def hash_reals(registry: Registry, draft: Draft, reals: list[RealFile]) -> tuple[dict[str, FileEntry], dict]:
    """Entries of the real files (stored in the registry's blobs as they are hashed),
    and the clean stamps to record once the commit is durable.  A stamp is recorded
    only if the file's ctime is older than a probe written afterwards, so any later
    write is sure to change it (timestamps are coarse)."""
    known = draft.state.clean
    entries: dict[str, FileEntry] = {}
    todo: list[RealFile] = []
    for r in reals:
        rec = known.get(str(r.st.st_ino))
        if rec is not None and rec[:3] == _stamp(r.st)[1:]:
            e = FileEntry.from_json(rec[3])
            entries[r.path] = FileEntry(e.digest, e.size, e.chunks, bool(r.st.st_mode & 0o111), e.ref, e.extra)
        else:
            todo.append(r)
    for r, e in zip(todo, transfer.upload_many(registry, [r.disk for r in todo])):
        entries[r.path] = e
    probe = os.path.join(draft.dir, "\\probe")
    with open(probe, "wb") as f:
        f.write(b"p")
    horizon = os.stat(probe).st_ctime_ns
    clean = {}
    for r in reals:
        st = os.lstat(r.disk)
        if _stamp(st) == _stamp(r.st) and st.st_ctime_ns < horizon:
            clean[str(st.st_ino)] = _stamp(st)[1:] + [entries[r.path].to_json()]
    return entries, clean


def draft_changes(registry: Registry, draft: Draft) -> tuple[dict[str, Change], dict]:
    """All changes of the draft relative to its base, and the clean stamps."""
    changes, reals = scan(draft)
    entries, clean = hash_reals(registry, draft, reals)
    for r in reals:
        e, b = entries[r.path], r.base
        if not (isinstance(b, FileEntry) and (b.digest, b.size, b.executable) == (e.digest, e.size, e.executable)):
            changes[r.path] = e
    return changes, clean


def conflicts(registry: Registry, base_root: str | None, onto: str | None,
              changes: dict[str, Change]) -> list[str]:
    """Paths we changed that the other side changed too, differently."""
    out = []
    for path, ours in changes.items():
        theirs = registry.lookup(onto, path) if onto else None
        base = registry.lookup(base_root, path) if base_root else None
        if not _same(theirs, base) and not _same(theirs, ours):
            out.append(path)
    return sorted(out)


def _conflict(collection: str, latest: int | None, paths: Iterable[str]) -> ConflictError:
    paths = sorted(paths)
    shown = ", ".join(paths[:CONFLICT_PATHS_SHOWN])
    more = f" and {len(paths) - CONFLICT_PATHS_SHOWN} more" if len(paths) > CONFLICT_PATHS_SHOWN else ""
    return ConflictError(f"{collection}: conflict with {collection}:v{latest}, changed on both sides: "
                         f"{shown}{more}; the draft is kept, resolve and sync again")


def _merged_attrs(pending: dict, description: str | None, metadata: dict | None,
                  aliases: Iterable[str], tags: Iterable[str]) -> dict:
    return {
        "description": description if description is not None else pending.get("description"),
        "metadata": {**(pending.get("metadata") or {}), **(metadata or {})},
        "aliases": sorted(set(pending.get("aliases") or ()) | set(aliases)),
        "tags": sorted(set(pending.get("tags") or ()) | set(tags)),
    }


def fetch_from_store(registry: Registry) -> Fetch:
    """Copy-up straight from the store, each chunk verified (the mount uses its cache)."""
    def fetch(entry: FileEntry, fd: int) -> None:
        for i in range(len(entry.chunks)):
            view = memoryview(transfer.read_chunk(registry, entry, i, entry.digest))
            offset = entry.chunk_span(i)[0]
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
    return fetch


class Latest:
    """open_draft(base=LATEST): look the latest version up in the store."""


LATEST = Latest()


def open_draft(registry: Registry, where: str, project: str, collection: str, fetch: Fetch,
               default_type: str = "dataset", base: VersionInfo | None | Latest = LATEST) -> Draft:
    """The draft of a collection in the drafts folder `where`, created the first time
    from `base` (a version record the caller already has, so no store access is
    needed; None for a collection without versions) or, by default, from its latest
    version looked up in the store."""
    path = os.path.join(where, check_name(collection, "collection name"))
    state = DraftState(collection=collection, project=check_name(project, "project"),
                       store=registry.store.url, type=default_type)
    root = None
    if not os.path.exists(os.path.join(path, STATE_FILE)):
        if isinstance(base, Latest):
            latest = registry.latest(project, collection)
            base = registry.version(project, collection, latest) if latest is not None else None
        if isinstance(base, VersionInfo):
            state.type, state.base, state.base_root = base.type, base.version, base.root
            state.base_mtime_ns = iso_ns(base.created_at)
            root = DirEntry(base.root, base.size, base.file_count)
    return Draft.open_or_create(path, registry, fetch, state, root)


_DIGESTS: "WeakKeyDictionary[Registry, TreeDigests]" = WeakKeyDictionary()


def _digests(registry: Registry) -> TreeDigests:
    """One digest-block cache per registry (they hold its immutable trees)."""
    found = _DIGESTS.get(registry)
    if found is None:
        found = _DIGESTS[registry] = TreeDigests(registry)
    return found


def warm_digests(registry: Registry, root: str | None) -> None:
    """Compute the digest blocks of a draft's base ahead of its commit (the first
    commit of a session otherwise reads every line of the base once)."""
    if root:
        _digests(registry).block(root)


def commit_draft(registry: Registry, draft: Draft, *, description: str | None = None,
                 metadata: dict | None = None, aliases: Iterable[str] = (),
                 tags: Iterable[str] = ()) -> CommitResult:
    """Publish the draft as the next version (or report latest unchanged) and advance
    the draft to it.  The caller keeps the draft from changing meanwhile."""
    st = draft.state
    changes, clean = draft_changes(registry, draft)
    attrs = _merged_attrs(st.attrs, description, metadata, aliases, tags)
    for _ in range(COMMIT_ATTEMPTS):
        latest = registry.latest(st.project, st.collection)
        current = registry.version(st.project, st.collection, latest) if latest is not None else None
        onto = current.root if current else None
        if latest != st.base:
            clash = conflicts(registry, st.base_root, onto, changes)
            if clash:
                raise _conflict(st.collection, latest, clash)
        if current is not None and not changes:
            root, digest = DirEntry(current.root, current.size, current.file_count), current.digest
        else:
            try:
                root = apply_changes(registry, onto, changes)
            except InvalidNameError as e:  # a file where they made a folder, or the reverse
                raise _conflict(st.collection, latest, [str(e)]) from None
            digest = _digests(registry).digest(root.tree)
        try:
            info, created = registry.commit(st.project, st.collection, st.type, root, digest,
                                            base=latest, exact_base=True, **attrs)
        except PreconditionFailed:
            continue  # someone published meanwhile: rebase onto the new latest
        moved = advance(draft, info.version, info.root, iso_ns(info.created_at), clean)
        return CommitResult(st.collection, info.version, created, len(changes), moved)
    raise ConflictError(f"{st.collection}: could not commit, other writers keep publishing")
