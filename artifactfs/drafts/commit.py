"""Turning a draft into a version.

1. scan: walk the folders that have rows (base entries nobody changed are not
   visited); unchanged inodes give their base entries for free, staged files are
   hashed (and their chunks stored) unless their stamp (data file inode, size,
   mtime, ctime) equals the one recorded at the previous commit.  The result is
   the set of changes relative to the base: path -> FileEntry, SymlinkEntry,
   DirEntry (a moved folder: a sub-tree graft), FOLDER (a folder the draft holds
   empty: the version keeps it) or None (removed), and what the version cannot
   hold (LeftOut).
2. rebase: if another writer committed since the base, each changed path is checked
   against the current latest; a path changed on both sides (differently) is a
   ConflictError naming the paths, and the draft is left untouched.
3. publish with Registry.commit(exact_base=True): the version number must directly
   follow the latest we rebased onto, otherwise we rebase again.
4. only once the version is durable, the draft advances to it (advance.py).
A process killed anywhere leaves no version or a complete one, and the draft as it
was (or advanced, if the version was complete)."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..chunks.digests import Digests, RunningDigest
from ..errors import (
    ArtifactfsError,
    ConflictError,
    InvalidNameError,
    ObjectNotFound,
    PathConflictError,
    PreconditionFailed,
)
from ..registry.gcstate import ObjectsSwept, check_present
from ..registry.manifest import (
    EMPTY_TREE,
    FOLDER,
    Change,
    DirEntry,
    Entry,
    FileEntry,
    Folder,
    SymlinkEntry,
    apply_changes,
    summarize,
)
from ..registry.names import check_component
from ..registry.versions import Registry
from ..timestamps import iso_ns
from .advance import advance
from .datafiles import DataStat, data_stat, pieces
from .datafiles import join as join_pieces
from .engine import Draft
from .inode import Inode
from .tostore import store_staged

COMMIT_ATTEMPTS = 50
CONFLICT_PATHS_SHOWN = 10
LEFT_OUT_SHOWN = 3
PUBLISHED_WITHOUT = ("ownership", "set-id and sticky bits")  # left_out kinds whose files are published
SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
UNCHANGED_KEEPS = ("description", "metadata")  # what a commit equal to latest does not set (aliases, tags: it does)
_KINDS = {stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}


@dataclass(frozen=True)
class Staged:
    """A staged file to hash: one of its paths, and its base entry there."""

    path: str
    ino: Inode
    st: DataStat
    base: Entry | None


@dataclass
class Scan:
    changes: dict[str, Change] = field(default_factory=dict)
    staged: list[Staged] = field(default_factory=list)
    left_out: dict[str, list[str]] = field(default_factory=dict)  # what -> paths

    def leave(self, what: str, path: str) -> None:
        self.left_out.setdefault(what, []).append(path)


@dataclass
class CommitResult:
    """What a commit did; `left_out` names what the version could not hold."""

    collection: str
    version: int
    created: bool
    changes: int
    left_out: dict[str, list[str]] = field(default_factory=dict)
    advanced: list[Inode] = field(default_factory=list)  # inodes shown anew once the draft moved on (advance)
    behind: str | None = None  # why the draft could not move onto the version (a full state dir), if it could not
    not_applied: list[str] = field(default_factory=list)  # 'description', 'metadata' an unchanged commit did not set

    @property
    def line(self) -> str:
        return f"{self.collection}:v{self.version}" + ("" if self.created else " (unchanged)")

    @property
    def note(self) -> str | None:
        """One line naming what stayed in the draft only, and whether the draft
        stayed behind the version, or None."""
        notes = []
        if self.left_out:
            notes.append(left_out_text(self.left_out))
        if self.not_applied:
            notes.append(f"its {' and '.join(self.not_applied)} stay as they were: content equal to it "
                         "publishes no version (as W&B logs none); the draft keeps the pending ones for "
                         "its next version")
        if self.behind:
            notes.append(f"published, but the draft could not move onto it ({self.behind}); it shows the same "
                         "files, and the next sync once there is room says it is unchanged")
        return f"{self.line}: " + "; ".join(notes) if notes else None


def left_out_text(left_out: dict[str, list[str]]) -> str:
    """One line naming what a version cannot hold, a few paths of each kind:
    files it leaves in the draft, then files it publishes without their owner
    or set-id and sticky bits."""
    def listed(kinds: list[str]) -> str:
        parts = []
        for what in kinds:
            paths = left_out[what]
            more = f" (+{len(paths) - LEFT_OUT_SHOWN} more)" if len(paths) > LEFT_OUT_SHOWN else ""
            parts.append(f"{what}: {', '.join(sorted(paths)[:LEFT_OUT_SHOWN])}{more}")
        return "; ".join(parts)
    kept = sorted(k for k in left_out if k not in PUBLISHED_WITHOUT)
    without = sorted(k for k in left_out if k in PUBLISHED_WITHOUT)
    return "; ".join(
        ([f"kept in the draft only (a version cannot hold them): {listed(kept)}"] if kept else [])
        + ([f"published without (a version keeps only the executable bit): {listed(without)}"]
           if without else []))


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _mtime_shown(draft: Draft, b: Entry | None) -> int:
    return (b.mtime_ns if isinstance(b, FileEntry) else None) or draft.state.base_mtime_ns


def file_entry(draft: Draft, ino: Inode, content: FileEntry, mtime: int, b: Entry | None) -> FileEntry | None:
    """The entry of a regular file (executable bit from its mode, its mtime), or
    None when it shows exactly the base entry `b`."""
    e = replace(content, executable=bool(ino.mode & 0o111)).with_mtime(mtime)
    if isinstance(b, FileEntry) and e.same_content(b) and mtime == _mtime_shown(draft, b):
        return None
    return e


def scan(draft: Draft) -> Scan:
    """Changes of the draft relative to its base, except staged files (listed to
    be hashed).  Only folders with rows are read."""
    out = Scan()
    with draft.db.lock:
        _scan_dir(draft, draft.root, "", draft.state.base_root, out)
    return out


def _scan_dir(draft: Draft, d: Inode, prefix: str, base_key: str | None, out: Scan) -> None:
    ref = base_key
    if d.tree is not None and d.tree != base_key:
        ref = d.tree  # a folder moved here: a graft, then its own changes
        now = draft.io.load(d.tree)
        if prefix:
            out.changes[prefix] = DirEntry(d.tree, *summarize(now))
        else:  # the root's base moved (an interrupted advance): top-level changes
            was = draft.io.load(base_key) if base_key else {}
            out.changes.update({n: now.get(n) for n in set(now) | set(was) if now.get(n) != was.get(n)})
    base = draft.io.load(ref) if ref else {}
    seen = set()
    held = 0  # children that the version holds (not removed, not left out)
    for name, row in draft.db.children(d.id):
        seen.add(name)
        path, b = join(prefix, name), base.get(name)
        if row is None:
            if b is not None:
                out.changes[path] = None
            continue
        held += 1
        ino = draft.load(row.id)
        try:
            check_component(name)
        except InvalidNameError:
            out.leave("names", path)
            held -= 1
            if b is not None:
                out.changes[path] = None
            continue
        _note_owner_and_mode(draft, ino, path, out)
        if ino.is_dir:
            if b is not None and not isinstance(b, DirEntry):
                out.changes[path] = None
            _scan_dir(draft, ino, path, b.tree if isinstance(b, DirEntry) else None, out)
        elif ino.is_reg and ino.staged:
            try:
                out.staged.append(Staged(path, ino, data_stat(draft, ino), b))
            except FileNotFoundError:
                pass  # not possible while the draft is held still; nothing to add
        elif ino.is_reg:
            assert ino.base is not None
            e = file_entry(draft, ino, ino.base, ino.mtime, b)
            if e is not None:
                out.changes[path] = e
        elif ino.is_link:
            assert ino.target is not None
            try:
                link = SymlinkEntry(ino.target)
            except InvalidNameError:  # a target that is not UTF-8
                out.leave("symlink targets", path)
                held -= 1
                if b is not None:
                    out.changes[path] = None
                continue
            if link != b:
                out.changes[path] = link
        else:
            out.leave(_KINDS.get(stat.S_IFMT(ino.mode), "special file") + "s", path)
            held -= 1
            if b is not None:
                out.changes[path] = None
    if d.tree is None:
        for name in sorted(set(base) - seen):
            out.changes[join(prefix, name)] = None
    if prefix and not held and (d.tree is None or (d.tree == base_key and not set(base) - seen)) \
            and base_key != EMPTY_TREE:
        out.changes[prefix] = FOLDER  # the version keeps it, empty (a moved folder's graft stays anyway)


def _note_owner_and_mode(draft: Draft, ino: Inode, path: str, out: Scan) -> None:
    """The owner and set-id/sticky bits a version cannot keep, of inodes changed
    since the base was made.  Read and write bits are not named: a version is
    read-only and keeps only the executable bit, so a 0600 checkpoint or the
    0444 files `cp -a` copies out of a version lose nothing that means something
    there (and would be named at every sync)."""
    if ino.ctime <= draft.state.base_mtime_ns:
        return
    if (ino.uid, ino.gid) != draft.owner:
        out.leave("ownership", path)
    if ino.mode & SPECIAL_BITS:
        out.leave("set-id and sticky bits", path)


def _stamp(st: DataStat) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _known(s: Staged) -> Digests | None:
    """The digests of a staged file taken while it was written (an empty file's
    are known anyway), or None: it must be read."""
    running = s.ino.running
    if running is not None and running.size == s.st.st_size:
        return running.result()
    return RunningDigest().result() if s.st.st_size == 0 else None


def hash_staged(registry: Registry | None, draft: Draft,
                staged: list[Staged]) -> tuple[dict[int, FileEntry], dict]:
    """Content entries of the staged files by inode (stored in the registry's blobs
    as they are hashed, if there is one; a file hashed while written is not read,
    tostore.py), and
    the stamps to record once the commit is durable.  A stamp is recorded only if
    the file's ctime is older than a probe written afterwards, so any later write
    is sure to change it (timestamps are coarse).  Storing may change a data
    file's ctime (it may become a blob: link, chmod), never its bytes or mtime."""
    known = draft.db.stamps()
    entries: dict[int, FileEntry] = {}
    todo: dict[int, Staged] = {}
    for s in staged:
        rec = known.get(s.ino.id)
        if rec is not None and rec[:4] == _stamp(s.st):
            entries[s.ino.id] = FileEntry.from_json(rec[4])
        elif s.ino.id not in entries:
            todo[s.ino.id] = s
    known_now = [_known(s) for s in todo.values()]
    for s, k in zip(todo.values(), known_now):
        if k is None and s.ino.sealed:
            with s.ino.lock:
                join_pieces(draft, s.ino)  # (not while its digest follows it, see datafiles.py; defensive)
    found = store_staged(registry, [draft.data_path(s.ino) for s in todo.values()],
                         [pieces(draft, s.ino, s.st.st_size) for s in todo.values()], known_now)
    for s, e in zip(todo.values(), found):
        entries[s.ino.id] = e
    try:
        horizon = _now_ctime(os.path.join(draft.dir, "\\probe"))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        return entries, {}  # a full disk: no stamps, the next commit reads these files again
    stamps = {}
    for s in staged:
        st = data_stat(draft, s.ino)
        if _stamp(st)[:3] == _stamp(s.st)[:3] and st.st_ctime_ns < horizon:
            stamps[s.ino.id] = _stamp(st) + [entries[s.ino.id].to_json()]
    return entries, stamps


def _now_ctime(probe: str) -> int:
    """The filesystem's 'now' as a ctime, from a file written (a write, not a
    utime: only a write's ctime is as fine-grained as the staged files' writes';
    ENOSPC on a full disk)."""
    with open(probe, "wb") as f:
        f.write(b"p")
    return os.stat(probe).st_ctime_ns


def draft_changes(registry: Registry | None, draft: Draft) -> tuple[Scan, dict]:
    """All changes of the draft relative to its base, and the stamps (registry None:
    the staged files' blobs are not stored)."""
    found = scan(draft)
    entries, stamps = hash_staged(registry, draft, found.staged)
    for s in found.staged:
        e = file_entry(draft, s.ino, entries[s.ino.id], s.st.st_mtime_ns, s.base)
        if e is not None:
            found.changes[s.path] = e
    return found, stamps


def _same(a: Entry | None, b: Change) -> bool:
    if isinstance(b, Folder):  # a folder kept: any folder there, or none (it is made again), is the same to it
        return a is None or isinstance(a, DirEntry)
    if isinstance(a, DirEntry) and isinstance(b, DirEntry):
        return a.tree == b.tree
    if isinstance(a, FileEntry) and isinstance(b, FileEntry):
        return a.same_content(b)
    return a == b


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


def warm_digests(registry: Registry, root: str | None) -> None:
    """Compute the digest blocks of a draft's base ahead of its commit (the first
    commit of a session otherwise reads every line of the base once)."""
    if root:
        registry.tree_digests.block(root)


def base_behind(base: int | None, latest: int | None) -> bool:
    """Has latest moved back behind the draft's base (its base, and any version after
    it, deleted; latest None: no version left)?  The draft then publishes what it
    shows: its base with its changes, not its changes onto the latest left (a
    deletion is not a change of content, docs/drafts.md)."""
    return base is not None and (latest is None or latest < base)


def _onto_deleted_base(registry: Registry, draft: Draft, latest_root: str | None,
                       changes: dict[str, Change]) -> DirEntry:
    """The root of what the draft shows: its deleted base with its changes.  Every
    tree and blob it needs must still be in the store (a gc may have removed the
    deleted base's objects while no mount pinned it; those the live `latest_root`
    shares are kept): otherwise one ArtifactfsError line, nothing published."""
    st = draft.state
    try:
        root = apply_changes(registry, st.base_root, changes)
        check_present(registry, registry.store, root.tree, latest_root)
    except (ObjectNotFound, ObjectsSwept) as e:
        raise _swept(draft, e) from None
    return root


def _swept(draft: Draft, e: ObjectNotFound | ObjectsSwept) -> ArtifactfsError:
    st = draft.state
    missing = (f"{len(e.blobs)} file chunk(s) and {len(e.trees)} folder(s) are missing"
               if isinstance(e, ObjectsSwept) else "its folders are missing")
    return ArtifactfsError(
        f"{st.collection}: cannot publish the draft: its base {st.collection}:v{st.base} was deleted and "
        f"gc removed what it still shows ({missing}); nothing was published and the draft is kept "
        "(copy out what you need, then `artifactfs discard` it)")


def commit_draft(registry: Registry, draft: Draft, *, description: str | None = None,
                 metadata: dict | None = None, aliases: Iterable[str] = (),
                 tags: Iterable[str] = ()) -> CommitResult:
    """Publish the draft as the next version (or report latest unchanged) and advance
    the draft to it.  The caller keeps the draft from changing meanwhile."""
    st = draft.state
    try:
        found, stamps = draft_changes(registry, draft)
    except ObjectNotFound as e:  # a base tree gone: gc'd after the base was deleted?
        if base_behind(st.base, registry.latest(st.project, st.collection)):
            raise _swept(draft, e) from None
        raise
    changes = found.changes
    attrs = _merged_attrs(st.attrs, description, metadata, aliases, tags)
    for _ in range(COMMIT_ATTEMPTS):
        latest = registry.latest(st.project, st.collection)
        current = registry.version(st.project, st.collection, latest) if latest is not None else None
        onto = current.root if current else None
        if base_behind(st.base, latest):
            root = _onto_deleted_base(registry, draft, onto, changes)
            digest = registry.tree_digests.digest(root.tree)
        elif current is not None and not changes:
            root, digest = DirEntry(current.root, current.size, current.file_count), current.digest
        else:
            if latest != st.base:
                clash = conflicts(registry, st.base_root, onto, changes)
                if clash:
                    raise _conflict(st.collection, latest, clash)
            try:
                root = apply_changes(registry, onto, changes)
            except PathConflictError as e:  # a file where they made a folder, or the reverse
                raise _conflict(st.collection, latest, [str(e)]) from None
            digest = registry.tree_digests.digest(root.tree)
        try:
            info, created = registry.commit(st.project, st.collection, st.type, root, digest,
                                            base=latest, exact_base=True, **attrs)
        except PreconditionFailed:
            continue  # someone published meanwhile: rebase onto the new latest
        result = CommitResult(st.collection, info.version, created, len(changes), found.left_out if created else {})
        pending = {} if created else {k: st.attrs[k] for k in UNCHANGED_KEEPS if k in st.attrs}
        result.not_applied = [k for k in UNCHANGED_KEEPS
                              if not created and attrs[k] and attrs[k] != getattr(info, k)]
        try:
            result.advanced = advance(draft, info.version, info.root, iso_ns(info.created_at), stamps, kept=changes)
            if pending:  # not published: a sync does not lose what was set for the next version
                for key, value in pending.items():
                    draft.set_pending(key, value)
        except OSError as e:  # the version is durable: only the draft stays behind (its next commit catches up)
            result.behind = e.strerror or str(e)
        return result
    raise ConflictError(f"{st.collection}: could not commit, other writers keep publishing")
