"""What a name in a draft may be, and how the draft refuses: POSIX's rules and errno
values (NAME_MAX 255 bytes, as ext4; EINVAL for a name that is not UTF-8, since names
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
