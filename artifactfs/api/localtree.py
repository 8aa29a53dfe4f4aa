"""A user's local folder as put reads it and as checkout and verify compare it.

Walking never follows a symlink unless asked: by default a symlink is an entry
(its target, read with readlink), as tar and rsync -a keep it.  Following
(`put --follow-symlinks`, and Artifact.add_dir by default, as wandb's
os.walk(followlinks=True) does) reads what a link points to and enters linked
folders; a dangling link, a link to itself (ELOOP) and a folder reached inside
itself are one-line errors.  An empty folder is an entry (LocalDir).  Fifos,
sockets and devices cannot be part of a version: each is left out with a
warning naming it (the CLI prints it as one line).  Every OSError, and every name that is not valid UTF-8, becomes one
LocalFileError or InvalidNameError naming the path."""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

from ..errors import InvalidNameError, LocalFileError, shown
from ..registry.manifest import SymlinkEntry
from ..registry.names import check_path

log = logging.getLogger("artifactfs.put")
_KINDS = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"))


@dataclass(frozen=True)
class LocalFile:
    """A regular file to hash: where it is on disk and its artifact path."""

    full: str
    path: str


@dataclass(frozen=True)
class LocalLink:
    """A symlink kept as an entry."""

    full: str
    path: str
    entry: SymlinkEntry


@dataclass(frozen=True)
class LocalDir:
    """An empty folder (nothing in it that a version holds), kept as an entry."""

    full: str
    path: str


Found = Union[LocalFile, LocalLink, LocalDir]


def scan(top: str, prefix: str, follow_symlinks: bool) -> Iterator[Found]:
    """Every file, (unless following) symlink and empty folder below the folder
    `top`, in name order, with artifact paths `prefix` + relative path (checked by
    names.check_path)."""
    try:
        st = os.stat(top)
    except OSError as e:
        raise LocalFileError("read", top, e) from None
    yield from _scan(top, prefix, follow_symlinks, {(st.st_dev, st.st_ino)})


def _scan(top: str, prefix: str, follow: bool, above: set[tuple[int, int]]) -> Iterator[Found]:
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise LocalFileError("read", top, e) from None
    for e in entries:  # the kinds come from readdir's d_type: no stat per file
        path = check_path(prefix + e.name)
        try:
            if e.is_symlink():
                if not follow:
                    yield LocalLink(e.path, path, _link_entry(e.path))
                    continue
                mode = os.stat(e.path).st_mode
                is_dir, is_file = stat.S_ISDIR(mode), stat.S_ISREG(mode)
            else:
                is_dir, is_file = e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)
            if is_dir and follow:  # only a followed link can lead back up
                st = os.stat(e.path)
                ident = (st.st_dev, st.st_ino)
                if ident in above:
                    raise LocalFileError("read", e.path, "a symlink leads to a folder that contains it")
                inside = above | {ident}
        except OSError as err:
            raise LocalFileError("read", e.path, err) from None
        if is_dir:
            found = False
            for item in _scan(e.path, path + "/", follow, inside if follow else above):
                found = True
                yield item
            if not found:  # nothing in it a version holds (fifos are left out): an empty folder
                yield LocalDir(e.path, path)
        elif is_file:
            yield LocalFile(e.path, path)
        else:
            _left_out(e.path)


def _left_out(full: str) -> None:
    try:
        mode = os.stat(full).st_mode
    except OSError:
        return  # gone meanwhile: nothing to leave out
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    log.warning("left out %s: a %s cannot be part of a version", shown(full), kind)


def _link_entry(full: str) -> SymlinkEntry:
    target = os.readlink(full)
    try:
        return SymlinkEntry(target)
    except InvalidNameError as e:
        raise LocalFileError("read", full, str(e)) from None


def leaves(root: str) -> Iterator[str]:
    """The '/'-joined relative path of every non-folder below `root` (files,
    symlinks, anything else), without following symlinks."""
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except OSError as e:
        raise LocalFileError("read", root, e) from None
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError as err:
            raise LocalFileError("read", e.path, err) from None
        if is_dir:
            yield from (f"{e.name}/{p}" for p in leaves(e.path))
        else:
            yield e.name
