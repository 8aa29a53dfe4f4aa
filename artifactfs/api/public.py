"""`Api`: look up logged artifacts, as W&B's public API does."""
from __future__ import annotations

from ..errors import NotFoundError, UsageError
from ..registry.names import Ref, split_ref
from ..registry.versions import CollectionInfo, Registry
from .artifact import Artifact, default_project


class Api:
    """Read access to a store (default: $ARTIFACTFS_STORE or the per-user store)."""

    def __init__(self, store: str | None = None, project: str | None = None) -> None:
        self.registry = Registry.open(store, create=False)
        self.project = project or default_project()

    def _ref(self, name: str) -> Ref:
        """'[[entity/]project/]name[:alias]'; the entity must be this store's (W&B looks it up)."""
        ref = split_ref(name)
        try:
            ref.check_entity(self.registry.entity)
        except NotFoundError as e:
            raise NotFoundError(f"{name}: {e}") from None
        return ref

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """'[[entity/]project/]collection[:alias|:vN]' (default alias: latest).
        NotFoundError for a deleted version or another entity."""
        ref = self._ref(name)
        info = self.registry.get(ref.project or self.project, ref.collection, ref.alias)
        if type is not None and info.type != type:
            raise UsageError(f"{name} has type {info.type!r}, not {type!r}")
        return Artifact._from_version(self.registry, info)

    def artifact_versions(self, type_name: str, name: str | None = None, per_page: int = 50) -> list[Artifact]:
        """W&B's Api.artifact_versions(type_name, name): the versions of collection
        `name` that are not deleted, oldest first; with one argument, that is the
        name (of any type).  NotFoundError for an unknown name, or a collection
        of another type than type_name.  per_page is accepted and unused."""
        if name is None:
            name, type_name = type_name, None
        ref = self._ref(name)
        project, collection = ref.project or self.project, ref.collection
        info = self.registry.collection(project, collection)  # NotFoundError for an unknown name
        if type_name is not None and info.type != type_name:
            raise NotFoundError(f"{collection} is a collection of type {info.type!r}, not {type_name!r}")
        return [Artifact._from_version(self.registry, v) for v in self.registry.version_infos(project, collection)]

    artifacts = artifact_versions  # W&B's newer name for it: Api.artifacts(type_name, name)

    def artifact_collections(self, project: str | None = None, type: str | None = None) -> list[CollectionInfo]:
        return [c for c in self.registry.collections(project or self.project) if type is None or c.type == type]

    def artifact_exists(self, name: str) -> bool:
        try:
            self.artifact(name)
            return True
        except LookupError:
            return False
