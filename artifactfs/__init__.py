"""artifactfs: versioned ML artifacts as plain folders."""
from .api import Api
from .artifact import Artifact, ManifestEntry
from .errors import (ArtifactFinalizedError, ArtifactfsError, ArtifactNotLoggedError,
                     ConflictError, DigestMismatchError, InvalidNameError, NotFoundError,
                     StoreError)
from .runinfo import set_step

__all__ = [
    "Api", "Artifact", "ManifestEntry", "ArtifactfsError", "ArtifactFinalizedError",
    "ArtifactNotLoggedError", "ConflictError", "DigestMismatchError", "InvalidNameError",
    "NotFoundError", "StoreError", "set_step",
]
__version__ = "0.1.0"
