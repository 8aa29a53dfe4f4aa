"""The stand-ins a draft's tree holds besides the user's files (see staging.py):
their names, how they are recognised, and how their content is read and written.
Every name here contains a backslash, which no artifact name can."""
from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable

import xxhash

from .draftstate import write_atomic
from .errors import InvalidNameError
from .manifest import DirEntry, FileEntry
from .names import check_component

LAZY = "\\lazy"
WHITEOUT = "\\wh."
PLACEHOLDER_BIT = stat.S_ISVTX

Fetch = Callable[[FileEntry, int], None]
"""Writes the whole content of a base file into an open file descriptor."""


def is_internal(name: str) -> bool:
    """Names with a backslash are ours (markers, whiteouts, temporaries)."""
    return "\\" in name


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError):
        return None


def lazy_of(disk_dir: str) -> DirEntry | None:
    """The base sub-tree under a lazy folder's overlay, or None for a plain folder."""
    d = _read_json(os.path.join(disk_dir, LAZY))
    return None if d is None else DirEntry(d["tree"], int(d["size"]), int(d["files"]))


def whiteout_name(name: str) -> str:
    """Fixed length (a name may be 255 bytes already): hides one base entry."""
    return WHITEOUT + xxhash.xxh3_128_hexdigest(name.encode("utf-8", "surrogateescape"))


def is_placeholder(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & PLACEHOLDER_BIT)


_KNOWN: dict[tuple[int, int, int], FileEntry] = {}
_KNOWN_MAX = 1_000_000


def read_placeholder(disk: str, st: os.stat_result) -> FileEntry:
    """The base file a placeholder stands for, its executable bit taken from the mode.
    A placeholder's content never changes in place (it is replaced, a new inode), so
    entries are remembered by (device, inode, ctime)."""
    key = (st.st_dev, st.st_ino, st.st_ctime_ns)
    e = _KNOWN.get(key)
    if e is None:
        d = _read_json(disk)
        if d is None:
            raise FileNotFoundError(errno.ENOENT, "placeholder vanished", disk)
        e = FileEntry.from_json(d)
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[key] = e
    return FileEntry(e.digest, e.size, e.chunks, bool(st.st_mode & 0o111), e.ref, e.extra)


def check_new_name(name: str) -> str:
    """A name a new file or folder may have: valid in an artifact, and UTF-8."""
    check_component(name)
    try:
        name.encode()
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid name {name!r}: not UTF-8") from None
    return name


def mode_of(entry: FileEntry) -> int:
    return 0o755 if entry.executable else 0o644


def summary(tree: dict) -> tuple[int, int]:
    size = files = 0
    for e in tree.values():
        size += e.size
        files += e.files if isinstance(e, DirEntry) else 1
    return size, files


def write_lazy(disk_dir: str, entry: DirEntry) -> None:
    write_atomic(os.path.join(disk_dir, LAZY), json.dumps(entry.to_json()).encode(), fsync=False)


def same_as_base(disk: str, st: os.stat_result, base: object) -> bool:
    """A placeholder that is exactly the base entry, permission bits included (a
    chmod the version cannot hold, like 0700 for 0755, is still the user's)."""
    return (isinstance(base, FileEntry) and is_placeholder(st) and read_placeholder(disk, st) == base
            and stat.S_IMODE(st.st_mode) & 0o777 == mode_of(base))
