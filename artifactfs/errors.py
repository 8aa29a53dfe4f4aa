"""Exceptions, in two kinds (docs/architecture.md, "Errors").

User-facing: every subclass of ArtifactfsError is something the user can fix or
must know (a bad name, a missing version, an unreachable or damaged store).  The
CLI prints its message on one line and exits non-zero, without a traceback; the
mount answers a sensible errno and logs one line.

Internal: PreconditionFailed is a signal between layers (a compare-and-swap
lost a race; the caller retries) and deliberately not an ArtifactfsError: if it
ever escapes, that is a bug, and it leaves a traceback in the log.  So does
every exception that is not an ArtifactfsError (a bare ValueError included)."""
from __future__ import annotations


def shown(path: str) -> str:
    """A path for a one-line message: undecodable bytes as \\xNN, control
    characters (newline, tab ...) escaped, everything else as it is."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class ArtifactfsError(Exception):
    """Base of all errors that are the user's to fix (bad name, missing version, ...)."""


class LocalFileError(ArtifactfsError):
    """A user's local file or folder could not be read, written or removed (put,
    get, download, checkout, verify): one line naming the path, escaped."""

    def __init__(self, verb: str, path: str, reason: OSError | str):
        why = reason if isinstance(reason, str) else (reason.strerror or str(reason))
        super().__init__(f"cannot {verb} {shown(path)}: {why}")


class UsageError(ArtifactfsError, ValueError):
    """An argument the caller gave is not acceptable: metadata that is not a JSON
    object, a TTL that is not positive, a type that does not match the collection.
    Also a ValueError, as W&B raises ValueError for these."""


class InvalidNameError(UsageError):
    """A collection, alias, tag, project or entry path that the format cannot hold."""


class PathConflictError(UsageError):
    """One path would be both a file and a directory (a change adds `a` as a file
    while `a/b` exists, or the reverse)."""


class CorruptStoreError(ArtifactfsError):
    """An object read from the store breaks the format (a tree that does not parse,
    a key that is not a digest, a size its chunks cannot hold): the store is damaged
    or was written by something else.  Never served as data."""


class NotFoundError(ArtifactfsError, LookupError):
    """A collection, version, alias or file that does not exist."""


class StoreError(ArtifactfsError):
    """The store URL does not name a usable store."""


class NoStoreError(StoreError):
    """Nothing is at the store URL yet (a command that writes makes the store)."""


class ObjectNotFound(StoreError, KeyError):
    """An object key is absent from the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class PreconditionFailed(Exception):
    """Internal: a compare-and-swap or put-if-absent lost a race; callers retry.
    Not user-facing (see the module docstring)."""


class DigestMismatchError(ArtifactfsError):
    """Bytes read back do not match the digest recorded in the manifest."""


class ConflictError(ArtifactfsError):
    """A draft changed paths that another writer changed too."""


class ArtifactNotLoggedError(ArtifactfsError):
    """The method needs an artifact that has been saved to a store."""


class ArtifactFinalizedError(ArtifactfsError):
    """The artifact is a logged (immutable) version; use new_draft() to change it."""
