"""What a name in a draft may be, what rename(2) refuses, and how the draft
refuses: POSIX's rules and errno values (NAME_MAX 255 bytes, as ext4; EINVAL for a name that is not UTF-8, since names
are stored as text)."""
from __future__ import annotations

import errno
import os

NAME_MAX = 255


def check_name(name: str) -> str:
    """A name a new entry may have: at most NAME_MAX bytes of UTF-8 (EINVAL when
    not UTF-8: names are stored as text)."""
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        raise OSError(errno.EINVAL, "a name that is not valid UTF-8", name) from None
    if len(raw) > NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, "file name too long", name)
    if not raw or "/" in name or name in (".", ".."):
        raise OSError(errno.EINVAL, "invalid name", name)
    return name


def posix_error(code: int, name: str = "") -> OSError:
    """OSError(code) with the system's message, naming `name`."""
    return OSError(code, os.strerror(code), name)


def check_rename(src_dir: bool, dst_dir: bool | None, into_itself: bool, dst_holds_source: bool,
                 dst_shows_entries: bool, noreplace: bool, exchange: bool, name: str) -> None:
    """rename(2)'s refusals, as the kernel's filesystems give them, for a source
    (a folder or not) moved to a name that holds `dst_dir` (None: nothing there):
    `into_itself` when the target folder is the source folder or below it,
    `dst_holds_source` when the source's folder is the destination folder or
    below it, `dst_shows_entries` when the destination folder is not empty."""
    if dst_dir is not None and noreplace:
        raise posix_error(errno.EEXIST, name)
    if dst_dir is None and exchange:
        raise posix_error(errno.ENOENT, name)
    if src_dir and into_itself:
        raise posix_error(errno.EINVAL, name)
    if dst_dir and dst_holds_source:
        raise posix_error(errno.EINVAL if exchange else errno.ENOTEMPTY, name)
    if dst_dir is not None and not exchange:
        if src_dir and not dst_dir:
            raise posix_error(errno.ENOTDIR, name)
        if dst_dir and not src_dir:
            raise posix_error(errno.EISDIR, name)
        if dst_dir and dst_shows_entries:
            raise posix_error(errno.ENOTEMPTY, name)
