"""The lock file of a local store, safe on a shared POSIX filesystem (NFS too).

A lock is taken by link(2) of a unique file onto the lock name, which fails
atomically if the name exists.  A lock older than LOCK_STALE seconds, or whose
owner process on this host is gone, is broken."""
from __future__ import annotations

import errno
import os
import socket
import time
import uuid

from ..errors import StoreError

LOCK_STALE = 30.0
LOCK_TIMEOUT = 60.0


class LinkLock:
    """Exclusive lock by link(2) of a unique file onto the lock name."""

    def __init__(self, name: str):
        self.name = name
        self.mine = f"{name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "LinkLock":
        with open(self.mine, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = 0.001
        try:
            while True:
                try:
                    os.link(self.mine, self.name)
                    return self
                except OSError as e:
                    if os.stat(self.mine).st_nlink == 2:  # NFS reported failure, but the link was made
                        return self
                    if not isinstance(e, FileExistsError) and e.errno not in (errno.EIO, errno.ETIMEDOUT):
                        raise
                self._break_if_stale()
                if time.monotonic() > deadline:
                    raise StoreError(f"timed out waiting for lock {self.name}")
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        finally:
            os.unlink(self.mine)

    def _break_if_stale(self) -> None:
        """Remove a lock whose holder is gone: older than LOCK_STALE, or held by a
        process of this host that no longer exists (a writer killed mid-update)."""
        try:
            st = os.stat(self.name)
            with open(self.name) as f:
                owner = f.read().split()
        except FileNotFoundError:
            return
        if time.time() - st.st_mtime <= LOCK_STALE and not _owner_gone(owner):
            return
        broken = f"{self.name}.broken-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.name, broken)
        except FileNotFoundError:
            return
        if os.stat(broken).st_ino != st.st_ino:
            # The lock changed hands after our look: give the live one back.
            try:
                os.link(broken, self.name)
            except FileExistsError:
                pass
        os.unlink(broken)

    def __exit__(self, *exc: object) -> None:
        os.unlink(self.name)


def _owner_gone(owner: list[str]) -> bool:
    """True when the lock file names a process of this host that has exited.
    Locks of other hosts (shared NFS) are only broken by age."""
    if len(owner) != 2 or owner[0] != socket.gethostname() or not owner[1].isdigit():
        return False
    try:
        os.kill(int(owner[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
