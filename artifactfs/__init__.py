"""artifactfs: versioned ML artifacts as plain folders."""
from .api.artifact import Artifact
from .api.entries import ManifestEntry
from .api.public import Api
from .errors import (
                     ArtifactFinalizedError,
                     ArtifactfsError,
                     ArtifactNotLoggedError,
                     ConflictError,
                     DigestMismatchError,
                     InvalidNameError,
                     NotFoundError,
                     StoreError,
)
from .registry.runinfo import set_step

__all__ = [
    "Api", "Artifact", "ManifestEntry", "ArtifactfsError", "ArtifactFinalizedError",
    "ArtifactNotLoggedError", "ConflictError", "DigestMismatchError", "InvalidNameError",
    "NotFoundError", "StoreError", "set_step",
]
__version__ = "0.1.0"
