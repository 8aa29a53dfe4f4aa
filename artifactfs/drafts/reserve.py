"""Room kept back in the state dir, so that a full disk can still be emptied.

Every change of a draft is a meta.db transaction, an `unlink` too: once the
state dir's filesystem is full, removing a staged file failed with ENOSPC, so
did the commit that would have given its space back, and only `truncate -s 0`
freed room.  A drafts slot therefore keeps a file of RESERVE bytes
(`reserve`, allocated with posix_fallocate).  A change that frees room (unlink,
rmdir, rename, truncate, a commit) which fails with ENOSPC removes it and is
tried once more; the reserve is made again once the filesystem has twice its
size free, so that making it never takes the last free bytes.  Like the
reserved blocks of ext4, but for the drafts alone."""
from __future__ import annotations

import os

RESERVE = 8 << 20  # bytes: many unlink transactions, or one commit's meta.db writes


class SpaceReserve:
    """The reserve file of one drafts dir."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, "reserve")
        self.missing = True  # as far as this process knows (restore() finds out): nothing to stat when held

    @property
    def held(self) -> bool:
        try:
            return os.stat(self.path).st_size == RESERVE
        except FileNotFoundError:
            return False

    def restore(self) -> bool:
        """Make the reserve if it is missing and there is room (2 x RESERVE free); whether it is held."""
        if self.held:
            self.missing = False
            return True
        directory = os.path.dirname(self.path)
        st = os.statvfs(directory)
        if st.f_bavail * st.f_frsize < 2 * RESERVE:
            return False
        tmp = self.path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE)
        except OSError:
            os.close(fd)
            os.unlink(tmp)
            return False
        os.close(fd)
        os.replace(tmp, self.path)
        self.missing = False
        return True

    def release(self) -> bool:
        """Give the reserve back to the filesystem; whether there was one."""
        self.missing = True
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False
