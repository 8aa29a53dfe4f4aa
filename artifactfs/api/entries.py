"""The W&B views of an artifact's files: ManifestEntry (the seed's
ArtifactManifestEntry) and the flat Manifest."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ArtifactNotLoggedError
from ..registry.manifest import Leaf, artifact_digest, wandb_manifest


@dataclass
class ManifestEntry:
    """One file of an artifact (the seed's ArtifactManifestEntry)."""

    path: str
    digest: str
    size: int
    ref: str | None = None
    extra: dict | None = None
    local_path: str | None = None
    _download: Callable[[str, str | None], str] | None = None  # the owning Artifact's

    @property
    def name(self) -> str:
        """The path from the artifact's root, as a W&B `File` from `files()` names it."""
        return self.path

    def download(self, root: str | None = None) -> str:
        """Download this one file under root (default: the artifact's default root);
        the local path written.  ArtifactNotLoggedError unless the artifact is logged."""
        if self._download is None:
            raise ArtifactNotLoggedError("entry.download() needs a logged artifact")
        return self._download(self.path, root)


class Manifest:
    """The flat W&B view of an artifact's files (and symlinks, store-format.md 4)."""

    def __init__(self, entries: dict[str, Leaf]):
        self.entries = entries

    def digest(self) -> str:
        return artifact_digest(self.entries.items())

    def to_manifest_json(self) -> dict:
        return wandb_manifest(self.entries.items())
