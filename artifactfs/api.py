"""`Api`: look up logged artifacts, as W&B's public API does."""
from __future__ import annotations

from .artifact import Artifact, default_project
from .names import split_ref
from .registry import CollectionInfo, Registry


class Api:
    """Read access to a store (default: $ARTIFACTFS_STORE or the per-user store)."""

    def __init__(self, store: str | None = None, project: str | None = None) -> None:
        self.registry = Registry.open(store, create=False)
        self.project = project or default_project()

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """'[project/]collection[:alias|:vN]' (default alias: latest)."""
        project, collection, alias = split_ref(name)
        info = self.registry.get(project or self.project, collection, alias)
        if type is not None and info.type != type:
            raise ValueError(f"{name} has type {info.type!r}, not {type!r}")
        return Artifact._from_version(self.registry, info)

    def artifact_versions(self, name: str, type: str | None = None) -> list[Artifact]:
        project, collection, _ = split_ref(name)
        project = project or self.project
        self.registry.collection(project, collection)  # NotFoundError for an unknown name
        aliases = self.registry.aliases(project, collection)
        return [Artifact._from_version(self.registry, self.registry.version(project, collection, n, aliases))
                for n in self.registry.versions(project, collection)]

    def artifact_collections(self, project: str | None = None, type: str | None = None) -> list[CollectionInfo]:
        return [c for c in self.registry.collections(project or self.project) if type is None or c.type == type]

    def artifact_exists(self, name: str) -> bool:
        try:
            self.artifact(name)
            return True
        except LookupError:
            return False
