"""Verification of local files against entries (`artifactfs verify`, and the
check that lets a download keep a file that is already right).  Always reads:
no digest cache."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from ..errors import shown
from ..registry.manifest import FileEntry, Leaf, SymlinkEntry
from .upload import hash_fd


def fd_matches(fd: int, entry: FileEntry) -> bool:
    try:
        return hash_fd(None, fd, None).digest == entry.digest
    except OSError:
        return False


def file_matches(path: str, entry: FileEntry) -> bool:
    """True when the local file has the entry's size and digest (always read: no cache)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and st.st_size == entry.size and fd_matches(fd, entry)
    finally:
        os.close(fd)


def verify_dir(root: str, items: Iterable[tuple[str, Leaf]]) -> list[str]:
    """Problems found comparing `root` with the entries: one line per bad entry
    (paths escaped).  Nothing is followed: a symlink where a file belongs is a
    problem, a symlink entry must be a symlink with the same target."""
    problems = []
    for path, entry in items:
        target = os.path.join(root, path)
        try:
            st = os.lstat(target)
            if isinstance(entry, SymlinkEntry):
                if not stat.S_ISLNK(st.st_mode) or os.readlink(target) != entry.target:
                    problems.append(f"{shown(path)}: not a symlink to {shown(entry.target)}")
            elif not stat.S_ISREG(st.st_mode):
                problems.append(f"{shown(path)}: not a regular file")
            elif not file_matches(target, entry):
                problems.append(f"{shown(path)}: content does not match digest {entry.digest}")
        except (FileNotFoundError, NotADirectoryError):
            problems.append(f"{shown(path)}: missing")
        except OSError as e:
            problems.append(f"{shown(path)}: {e.strerror}")
    return problems
