"""Where artifactfs keeps per-user state on this machine (logs, drafts, control
sockets, mount records): one private directory, so that no layer below the
mount has to import the mount to find it; and the check that a directory of
ours is private (no other user can put, replace or read anything in it)."""
from __future__ import annotations

import os
import stat

from .errors import UsageError


def state_dir() -> str:
    """${XDG_STATE_HOME:-~/.local/state}/artifactfs, made if missing, owned by this
    user and private (0700).  UsageError (one line) when another user owns it, or
    it is another user's symbolic link: drafts are staged below it."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    path = os.path.join(base, "artifactfs")
    private_dir(path, "state dir", make_private=True)
    return path


def private_dir(path: str, what: str, make_private: bool = False) -> None:
    """Make directory `path` (and its parents) if missing; UsageError naming `what`
    unless it is this user's: a directory owned by the process's user (a symbolic
    link to one only when the link is the user's too, so that nobody else can
    turn it elsewhere) that no other user may write to.  make_private: set its
    mode to 0700 (else a directory writable by others is refused)."""
    uid = os.geteuid()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        link = os.lstat(path)
        if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
            raise UsageError(f"{what}: {path} is a symbolic link of uid {link.st_uid}, not of this user "
                             f"(uid {uid}); remove it")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"{what}: {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            raise UsageError(f"{what}: {path} is owned by uid {st.st_uid}, not by this user (uid {uid}): "
                             "remove it, or use a directory of your own")
        if make_private and stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        elif not make_private and st.st_mode & 0o022:
            raise UsageError(f"{what}: {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}): "
                             "use a private directory (chmod go-w), not a shared one")
    finally:
        os.close(fd)
