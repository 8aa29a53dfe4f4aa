"""The one place where errors become errno values for the program that made a
FUSE request, and where they are logged.

  FUSEError (raised by a node on purpose)   its errno, not logged
  NotFoundError                             ENOENT, not logged
  UsageError (a bad name or value)          EINVAL, not logged
  ConflictError                             EBUSY, one ERROR line
  any other ArtifactfsError                 EIO, one ERROR line (store unreachable, corrupt
                                            store, mismatching bytes: never wrong bytes)
  OSError with an errno                     that errno (EIO also gets one ERROR line)
  anything else (a bug)                     EIO, logged with its traceback

User-facing errors (ArtifactfsError, errors.py) never leave a traceback in the
log; everything else does (internal signals such as PreconditionFailed
included), so a bug is never mistaken for a user's mistake."""
from __future__ import annotations

import errno
import logging

import pyfuse3

from ..errors import ArtifactfsError, ConflictError, NotFoundError, UsageError

log = logging.getLogger("artifactfs.mount")
_QUIET: tuple[tuple[type[Exception], int], ...] = ((NotFoundError, errno.ENOENT), (UsageError, errno.EINVAL))


def fuse_error(code: int) -> pyfuse3.FUSEError:
    """The error a node raises to answer a request with errno `code`."""
    return pyfuse3.FUSEError(code)


def to_fuse_error(e: Exception, op: str) -> pyfuse3.FUSEError:
    """The FUSEError a program sees for `e`, raised while serving request `op`
    (logged as the table in the module docstring says)."""
    if isinstance(e, pyfuse3.FUSEError):
        return e
    for kind, code in _QUIET:
        if isinstance(e, kind):
            return fuse_error(code)
    if isinstance(e, ArtifactfsError):
        log.error("%s: %s", op, e)
        return fuse_error(errno.EBUSY if isinstance(e, ConflictError) else errno.EIO)
    if isinstance(e, OSError) and e.errno:
        if e.errno == errno.EIO:
            log.error("%s: %s", op, e)
        return fuse_error(e.errno)
    log.error("%s: unexpected error", op, exc_info=e)
    return fuse_error(errno.EIO)

