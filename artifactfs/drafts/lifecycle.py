"""Opening a collection's draft: made the first time from its base version,
found again after a restart (what a killed process left half-done is cleaned
up), or set aside when it cannot go on: its base version is gone from the
store, or an older artifactfs wrote it.  A draft set aside keeps its staged
files as plain files under files/ in its new place (see slots.set_aside)."""
from __future__ import annotations

import logging
import os
import shutil

from ..chunks import download
from ..errors import NotFoundError, ObjectNotFound
from ..registry.manifest import FileEntry
from ..registry.names import check_name
from ..registry.versions import Registry, VersionInfo
from ..timestamps import iso_ns
from .datafiles import rejoin
from .engine import Draft, Fetch
from .inode import DraftState, Inode
from .meta import DB_FILE
from .slots import OLD_STATE_FILE, WHY_FILE, set_aside, write_atomic

log = logging.getLogger("artifactfs.drafts")


def fetch_from_store(registry: Registry) -> Fetch:
    """Copy-up straight from the store, each chunk verified (the mount uses its cache)."""
    def fetch(entry: FileEntry, fd: int) -> None:
        for i in range(len(entry.chunks)):
            view = memoryview(download.read_chunk(registry, entry, i, entry.digest))
            offset = entry.chunk_span(i)[0]
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
    return fetch


class Latest:
    """open_draft(base=LATEST): look the latest version up in the store."""


LATEST = Latest()


def base_gone(registry: Registry, draft: Draft) -> bool:
    """Is the version the draft started from no longer in the store (deleted, or
    gone with its collection)?  (Only a definite answer counts: an unreachable
    store is not a missing base.)"""
    st = draft.state
    if st.base is None:
        return False
    try:
        info = registry.version(st.project, st.collection, st.base)
    except NotFoundError:
        return True
    return info.deleted or info.root != st.base_root


def base_still_readable(registry: Registry, draft: Draft) -> bool:
    """Is the draft's base, deleted, still the same record, with its root tree still
    in the store (not yet removed by gc)?  A draft with changes then goes on from it
    (docs/drafts.md: a deletion is no change of content)."""
    st = draft.state
    try:
        info = registry.version(st.project, st.collection, st.base)
        if info.root != st.base_root or st.base_root is None:
            return False
        registry.load(st.base_root)
    except (NotFoundError, ObjectNotFound):
        return False
    return True


def recover(draft: Draft) -> None:
    """After a process ended: inodes without names go, with data files no row
    claims (a create or copy-up killed half-way); files kept one file per chunk
    become one data file again (datafiles.rejoin)."""
    with draft.db.lock:
        for ino in draft.db.orphans():
            with draft.change():
                draft.db.delete(ino)
        staged = draft.db.staged_ids()
        rejoin(draft.data, staged)
        for name in os.listdir(draft.data):
            if not name.isdigit() or int(name) not in staged:
                os.unlink(os.path.join(draft.data, name))


def discard(draft: Draft) -> None:
    """Remove a draft from disk (a new collection given up before its first commit)."""
    draft.close()
    shutil.rmtree(draft.dir)


def put_aside(draft_dir: str, why: str) -> str:
    """Set a draft aside (one log line) with its staged files exported, and why
    (slots.set_aside_drafts lists them); returns where."""
    where = set_aside(draft_dir)
    if os.path.exists(os.path.join(where, DB_FILE)):
        export_files(where)
    write_atomic(os.path.join(where, WHY_FILE), why.encode())
    log.warning("the draft in %s was set aside to %s: %s; its staged files are in %s/files",
                draft_dir, where, why, where)
    return where


def export_files(draft_dir: str) -> None:
    """Give the staged files of a draft their paths again, under files/ (hard links
    of the data files; symlinks recreated; nothing is fetched)."""
    draft = Draft(draft_dir, _NoTrees(), _no_fetch, (os.getuid(), os.getgid()))
    try:
        rejoin(draft.data, draft.db.staged_ids())
        _export(draft, draft.root, os.path.join(draft_dir, "files"))
    finally:
        draft.close()


def _export(draft: Draft, d: Inode, target: str) -> None:
    os.makedirs(target, mode=0o700, exist_ok=True)
    for name, row in draft.db.children(d.id):
        if row is None:
            continue
        ino, where = draft.load(row.id), os.path.join(target, name)
        if ino.is_dir:
            _export(draft, ino, where)
        elif ino.is_reg and ino.staged:
            _export_file(draft.data_path(ino), where)
        elif ino.is_link and ino.target is not None:
            os.symlink(ino.target, where)


def _export_file(data: str, where: str) -> None:
    """A hard link of a data file, or a copy when it is also a blob of a local store
    (tostore.py): whoever edits the exported file must not change the blob."""
    if os.stat(data).st_nlink == 1:
        os.link(data, where)
    else:
        shutil.copy2(data, where)


class _NoTrees:
    """A draft read without its store: base trees are not needed to export."""

    def load(self, key: str) -> dict:
        return {}

    def save(self, tree: dict) -> str:
        raise NotImplementedError


def _no_fetch(entry: FileEntry, fd: int) -> None:
    raise NotImplementedError


def open_draft(registry: Registry, where: str, project: str, collection: str, fetch: Fetch,
               owner: tuple[int, int], default_type: str = "dataset",
               base: VersionInfo | None | Latest = LATEST) -> Draft:
    """The draft of a collection in the drafts folder `where`, created the first time
    from `base` (a version record the caller already has, so no store access is
    needed; None for a collection without versions) or, by default, from its latest
    version looked up in the store."""
    path = os.path.join(where, check_name(collection, "collection name"))
    if os.path.exists(os.path.join(path, OLD_STATE_FILE)):
        put_aside(path, "it was written by an older artifactfs")
    if os.path.exists(os.path.join(path, DB_FILE)):
        try:
            draft = Draft(path, registry, fetch, owner)
        except ValueError:  # a creation killed before its one transaction: nothing in it
            shutil.rmtree(path)
        else:
            try:
                recover(draft)
            except BaseException:
                draft.close()  # (meta.db stays locked while open: meta.py)
                raise
            return draft
    state = DraftState(collection=collection, project=check_name(project, "project"),
                       store=registry.store.url, type=default_type)
    if isinstance(base, Latest):
        latest = registry.latest(project, collection)
        base = registry.version(project, collection, latest) if latest is not None else None
    if isinstance(base, VersionInfo):
        state.type, state.base, state.base_root = base.type, base.version, base.root
        state.base_mtime_ns = iso_ns(base.created_at)
    return Draft.create(path, registry, fetch, owner, state)
