"""artifactfs: versioned ML artifacts as plain folders.

Artifact, ManifestEntry, Api and set_step are loaded on first use (PEP 562), so
that programs needing only a part of the package (`artifactfs sync`, the mount
helper) do not import all of it."""
from __future__ import annotations

import importlib
from typing import Any

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

_LAZY = {"Artifact": ".api.artifact", "ManifestEntry": ".api.entries", "Api": ".api.public",
         "set_step": ".registry.runinfo"}

__all__ = [
    "Api", "Artifact", "ManifestEntry", "ArtifactfsError", "ArtifactFinalizedError",
    "ArtifactNotLoggedError", "ConflictError", "DigestMismatchError", "InvalidNameError",
    "NotFoundError", "StoreError", "set_step",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'artifactfs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
