"""Verification of local files against entries (`artifactfs verify`, and the
check that lets a download keep a file that is already right).  Always reads:
no digest cache."""
from __future__ import annotations

import errno
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


def verify_dir(root: str, items: Iterable[tuple[str, Leaf]]) -> list[str]:
    """Problems found comparing `root` with the entries: one line per bad entry
    (paths escaped).  Nothing is followed, folders included (each is opened
    from its parent's descriptor, so paths longer than PATH_MAX work too): a
    symlink where a file or folder belongs is a problem, a symlink entry must
    be a symlink with the same target."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return [f"{shown(path)}: missing" for path, _ in items]
    problems = []
    parent: tuple[str, int] | None = None  # the folder of the last entry, held open for the next ones
    try:
        for path, entry in items:
            folder, _, name = path.rpartition("/")
            try:
                if parent is None or parent[0] != folder:
                    if parent is not None:
                        os.close(parent[1])
                        parent = None
                    parent = (folder, _open_folder(root_fd, folder))
                problem = _check(parent[1], name, entry)
            except _NotAFolder:
                problem = "a symlink or file where a folder belongs"
            except FileNotFoundError:
                problem = "missing"
            except OSError as e:
                problem = e.strerror
            if problem:
                problems.append(f"{shown(path)}: {problem}")
    finally:
        if parent is not None:
            os.close(parent[1])
        os.close(root_fd)
    return problems


class _NotAFolder(Exception):
    pass


def _open_folder(root_fd: int, folder: str) -> int:
    """fd of root/folder, following no symlink on the way (_NotAFolder)."""
    fd = os.dup(root_fd)
    try:
        for part in filter(None, folder.split("/")):
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _NotAFolder() from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(dir_fd: int, name: str, entry: Leaf) -> str | None:
    """What is wrong with `name` in the folder, or None."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if isinstance(entry, SymlinkEntry):
        if not stat.S_ISLNK(st.st_mode) or os.readlink(name, dir_fd=dir_fd) != entry.target:
            return f"not a symlink to {shown(entry.target)}"
        return None
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_size != entry.size or not fd_matches(fd, entry):
            return f"content does not match digest {entry.digest}"
    finally:
        os.close(fd)
    return None
