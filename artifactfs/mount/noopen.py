"""Who answers OPEN requests (OpenMode), and files served by inode, without a handle of ours.

NATIVE (the default with the patched pyfuse3): the kernel sends OPEN and
RELEASE; pyfuse3's native reader threads answer those of version files
themselves (third_party/pyfuse3: fastopen.c; a version file is a regular file
whose attributes are pinned, ops.Operations.native_attr_timeout): EROFS for
any write access, root's included, else fh = the inode number with
keep_cache.  Every other OPEN (drafts, control files) is answered by Python,
as with PYTHON.

PYTHON (`--send-opens`, or a stock pyfuse3): every OPEN and RELEASE is
answered by Python: the exact lineage record, at two round trips through
Python per open().

NONE (`--no-opens`): Linux stops sending OPEN and RELEASE to a FUSE mount
once the filesystem answers one OPEN with ENOSYS; from then on it keeps every
file's page cache across opens (FOPEN_KEEP_CACHE) and sends READ, WRITE and
FSYNC without a file handle (fh 0).  A warm `open() + read() + close()` from
Python then costs one request to the daemon instead of three (OPEN, IOCTL,
RELEASE): the IOCTL of `isatty()`, which the patched pyfuse3 answers (ENOTTY)
in its native reader threads (threads.py counts them).  With no OPEN to
refuse, an open for writing by root (whom the 0444 mode does not stop) would
succeed, and a writable shared mmap of it would change the kernel's page cache
of the file, which every reader shares, until the writeback is refused.  So
version files are then owned by no user (context.NO_OWNER: stat() shows
65534): CAP_DAC_OVERRIDE only applies to inodes whose owner maps to a user,
and the kernel refuses root's open for writing (EACCES) as the mode refuses
everyone else's (docs/mount-semantics.md, "Writes").

Stock pyfuse3 (3.5) passes the read/write handlers only the file handle, so
the mount could not tell which file a handle-less READ is for.  The pyfuse3
that `make setup` and `make install` build (third_party/pyfuse3) passes the
inode number as `fh` when the kernel sends none, and says so with
`pyfuse3.NO_OPEN_INODE_FH`; a natively opened file's handle is its inode
number too.  Without it the mount answers every OPEN (`AVAILABLE` is False):
a `pip install`ed artifactfs works, with more requests per open.

Handles made by open/create are numbered from HANDLE_BASE up, and inode
numbers are below 2**63 (inodes.ino_of), so a request's `fh` says which it is."""
from __future__ import annotations

import enum
import os
from collections import OrderedDict

import pyfuse3

from .handles import Handle
from .inodes import InodeTable

AVAILABLE = bool(getattr(pyfuse3, "NO_OPEN_INODE_FH", False))
NATIVE_AVAILABLE = AVAILABLE and hasattr(pyfuse3, "fastpath_opens")
HANDLE_BASE = 1 << 63  # the first handle open/create gives out: never an inode number
KEPT_READERS = 64  # per-inode read handles kept (each may hold one chunk of up to 8 MiB in hand)


class InodeHandles:
    """Handles for requests that name an inode instead of a handle.

    Reads of files whose bytes never change (immutable handles: version
    files) keep one handle per inode, for its read-ahead state, the most
    recently used KEPT_READERS of them; other files (drafts) get a fresh
    handle per request, as their handles hold no state.  A handle is made by
    the node's own open(), so its checks apply: a write to a version file is
    EROFS, as an open for writing would have been."""

    def __init__(self, table: InodeTable, limit: int = KEPT_READERS):
        self.table = table
        self.limit = limit
        self._readers: OrderedDict[int, Handle] = OrderedDict()

    async def reader(self, ino: int) -> Handle:
        """A handle to read (or fsync) inode `ino`; ESTALE if the kernel forgot it."""
        handle = self._readers.get(ino)
        if handle is not None:
            self._readers.move_to_end(ino)
            return handle
        handle = await self.table[ino].open(os.O_RDONLY)
        if handle.immutable:
            self._readers[ino] = handle
            if len(self._readers) > self.limit:
                self._readers.popitem(last=False)
        return handle

    async def writer(self, ino: int) -> Handle:
        """A handle to write inode `ino` (the node refuses if it is read-only)."""
        return await self.table[ino].open(os.O_RDWR)

    def forget(self, ino: int) -> None:
        """The kernel forgot `ino`: a later node with that number gets a new handle."""
        self._readers.pop(ino, None)


class OpenMode(enum.Enum):
    """Who answers OPEN and RELEASE of a mount (see the module docstring)."""

    NATIVE = "native"  # pyfuse3's native threads for version files, Python for the rest
    PYTHON = "python"  # Python for every file (--send-opens; a stock pyfuse3)
    NONE = "none"  # no OPEN at all after the first (--no-opens)

    @classmethod
    def choose(cls, send_opens: bool = False, no_opens: bool = False) -> "OpenMode":
        """The mode the options ask for, as far as this pyfuse3 can serve it."""
        if no_opens and AVAILABLE:
            return cls.NONE
        if send_opens or not NATIVE_AVAILABLE:
            return cls.PYTHON
        return cls.NATIVE


def describe(mode: OpenMode, send_opens: bool, read_only: bool = False) -> str:
    """One log line: how this mount serves opens, and why."""
    if mode is OpenMode.NONE and read_only:
        return ("files are served without OPEN requests (a read-only mount: the kernel refuses every open "
                "for writing with EROFS)")
    if mode is OpenMode.NATIVE:
        return ("opens of version files are answered by pyfuse3's native threads (read-only, EROFS for "
                "writing), the others by the daemon")
    if mode is OpenMode.NONE:
        return ("files are served without OPEN requests (--no-opens): version files are owned by no user "
                "(stat shows 65534), so the kernel refuses opens for writing (EACCES), root's too")
    if send_opens:
        return "every open and close reaches the daemon (--send-opens)"
    return ("every open and close reaches the daemon: this pyfuse3 cannot answer them natively "
            "(`make setup` / `make install` build one that can: third_party/pyfuse3)")
