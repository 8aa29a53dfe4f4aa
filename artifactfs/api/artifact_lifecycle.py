"""What a logged Artifact adds beyond its files: delete, links and portfolios,
lineage (W&B delete(), link(), unlink(), is_link, source_*, linked_artifacts,
logged_by(), used_by(), history_step).  Mixed into artifact.Artifact."""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace
from typing import Self

from ..chunks import upload
from ..errors import ArtifactNotLoggedError, UsageError
from ..registry.gcstate import ObjectsSwept
from ..registry.manifest import Change, FileEntry
from ..registry.runinfo import RunRecord
from ..registry.versions import Registry, VersionInfo
from . import lineage, links
from .entries import ManifestEntry
from .lifecycle import NEVER, default_ttl


class ArtifactLifecycle:
    """Needs the host class's _need_logged(), _reg(), _load() and _from_version()."""

    _info: VersionInfo | None
    _collection: str
    _ttl: dt.timedelta | None
    _ttl_inherited: bool
    _changes: dict[str, Change]
    _local: dict[str, str]

    def _need_logged(self, what: str) -> VersionInfo: ...  # provided by Artifact
    def _reg(self) -> Registry: ...  # provided by Artifact

    def _wrap(self, info: VersionInfo) -> Self:
        return type(self)._from_version(self._reg(), info)  # type: ignore[attr-defined]

    # -- TTL -------------------------------------------------------------------------
    @property
    def ttl(self) -> dt.timedelta | None:
        """The TTL (W&B): a timedelta, or None (never expires).  A version nobody set a
        TTL on inherits its project's default (`artifactfs ttl --default`), which only
        a logged artifact knows: ArtifactNotLoggedError before save() then."""
        if self._ttl_inherited and self._info is None:
            raise ArtifactNotLoggedError("the inherited TTL is known once the artifact is saved")
        return self._ttl

    @ttl.setter
    def ttl(self, value: dt.timedelta | None) -> None:
        if value is not None and (not isinstance(value, dt.timedelta) or value.total_seconds() <= 0):
            raise UsageError("ttl must be a positive datetime.timedelta or None")
        self._ttl, self._ttl_inherited = value, False

    def _stored_ttl(self) -> float | None:
        """The record's ttl: seconds, None (inherit) or lifecycle.NEVER."""
        if self._ttl_inherited:
            return None
        return NEVER if self._ttl is None else self._ttl.total_seconds()

    def _load_ttl(self, info: VersionInfo) -> None:
        self._ttl_inherited = info.ttl is None
        if info.ttl is None:
            seconds = default_ttl(self._reg(), info.project)
        else:
            seconds = None if info.ttl == NEVER else info.ttl
        self._ttl = None if seconds is None else dt.timedelta(seconds=seconds)

    def _store_again(self, blobs: set[str]) -> None:
        """Put the files whose blobs a concurrent gc removed (gcstate.py) again."""
        for path, entry in list(self._changes.items()):
            if isinstance(entry, FileEntry) and blobs.intersection(entry.chunks + tuple(
                    [entry.pack.pack] if entry.pack else [])):
                local = self._local.get(path)
                again = upload.upload_file(self._reg(), local) if local and os.path.isfile(local) else None
                if again is None or again.with_mtime(entry.mtime_ns) != replace(entry, pack=None):
                    raise ObjectsSwept(blobs, set())
                self._changes[path] = again.with_mtime(entry.mtime_ns)  # stored again as blobs

    # -- delete ----------------------------------------------------------------------
    def delete(self, delete_aliases: bool = False) -> None:
        """Mark this version DELETED (W&B delete()): it leaves listings, the mount and
        lookups; its files stay until `artifactfs gc`.  Raises lifecycle.HasAliasesError
        (a ValueError) while it has aliases, unless delete_aliases.  On a link, only the
        link is removed (its aliases with it); on a source, its links go too."""
        info = self._need_logged("delete()")
        links.delete(self._reg(), info, delete_aliases)
        self._load(self._reg().version(info.project, info.collection, info.version))  # type: ignore[attr-defined]

    # -- links -----------------------------------------------------------------------
    def link(self, target_path: str, aliases: list[str] | None = None) -> Self:
        """Link this version into a portfolio: '{portfolio}', '{project}/{portfolio}',
        '{entity}/{project}/{portfolio}' or 'model-registry/{model}' (W&B link()).
        The link has its own version number there; returns it."""
        info = self._need_logged("link()")
        project, portfolio = links.parse_target(self._reg(), target_path, info.project)
        return self._wrap(links.link(self._reg(), info, project, portfolio, aliases))

    def unlink(self) -> None:
        """Remove this link from its portfolio; ValueError when this is not a link."""
        info = self._need_logged("unlink()")
        links.unlink(self._reg(), info)
        self._load(self._reg().version(info.project, info.collection, info.version))  # type: ignore[attr-defined]

    @property
    def is_link(self) -> bool:
        return self._info is not None and self._info.link is not None

    def _source(self) -> VersionInfo:
        return links.source_of(self._reg(), self._need_logged("the source"))

    @property
    def source_artifact(self) -> Self:
        """The originally logged version (this artifact when it is not a link)."""
        return self if not self.is_link else self._wrap(self._source())

    @property
    def source_collection(self) -> str:
        if self._info is None:
            return self._collection
        return self._source().collection if self.is_link else self._info.collection

    @property
    def source_project(self) -> str:
        return self._source().project if self.is_link else self.project  # type: ignore[attr-defined]

    @property
    def source_entity(self) -> str:
        return self._reg().entity

    @property
    def source_name(self) -> str:
        """'{source_collection}:v{N}' (only the collection name before save)."""
        if self._info is None:
            return self._collection
        return self._source().name if self.is_link else self._info.name

    @property
    def source_version(self) -> str:
        return f"v{self._source().version}"

    @property
    def source_qualified_name(self) -> str:
        return f"{self.source_entity}/{self.source_project}/{self.source_name}"

    @property
    def linked_artifacts(self) -> list[Self]:
        """The links of this source version (at most 500); [] on a link."""
        info = self._need_logged("linked_artifacts")
        return [self._wrap(v) for v in links.linked(self._reg(), info)]

    def get_path(self, name: str) -> ManifestEntry:
        """Deprecated in W&B: get_entry(name)."""
        return self.get_entry(name)  # type: ignore[attr-defined]

    # -- lineage ----------------------------------------------------------------------
    def _used(self, info: VersionInfo) -> None:
        """Record that this process used the version (lineage.used_by())."""
        lineage.record_own_use(self._reg(), info)

    def logged_by(self) -> RunRecord | None:
        """The run (process) that logged the source version: id, program (its name,
        never its arguments), user, host, started_at, pid, run_ids (WANDB_RUN_ID,
        SLURM_JOB_ID, MLFLOW_RUN_ID, ARTIFACTFS_RUN_ID) and step.  None for
        versions from before lineage."""
        return lineage.logged_by(self._source())

    def used_by(self) -> list[lineage.Use]:
        """Every run that used this version or its links (Use: run, at, via, path)."""
        return lineage.uses(self._reg(), self._need_logged("used_by()"))

    @property
    def history_step(self) -> int | None:
        """The producer's step ($ARTIFACTFS_STEP or artifactfs.set_step()), else None."""
        if self._info is None:
            raise ArtifactNotLoggedError("history_step needs a logged artifact")
        return lineage.history_step(self._source())
