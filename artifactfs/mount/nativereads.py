"""Version files whose READs are answered without Python, where pyfuse3 allows it.

The pyfuse3 that `make setup` and `make install` build (third_party/pyfuse3:
fastpath.c) reads /dev/fuse in native threads.  A file registered with it
(`pyfuse3.fastpath_register`: inode, blob digest, length, path of a local file)
has its READs answered by those threads, without the GIL and without a trip
through the trio loop and a worker thread: the thread reads the whole file,
checks its length and XXH3-128 against the blob key, and replies with the
requested range.  (Its GETATTRs are answered there too, from the attributes
pinned at LOOKUP: ops.Operations.native_attr_timeout.)  A file it cannot answer so (missing: a packed blob, a blob
not in the cache yet; wrong length or digest: corrupted) goes to Operations.read
as before, which fetches, verifies, and answers EIO on a mismatch: a corrupted
blob never reaches a program, natively or not.

Registered: version files whose content is one blob of at most
FASTPATH_FILE_MAX bytes (the native threads hash the whole file on every READ,
so a big file stays with the chunk reader and its read-ahead), from the moment
the inode table holds their node (before the LOOKUP or listing that hands them
to the kernel is answered) until the kernel forgets them.

Read-ahead (fastpath.c): once 4 files of one folder were read natively, a
native thread reads the folder's other registered files ahead, if they add up
to at most 64 MiB, at most a quarter of the RAM over the mount's life: it asks
the kernel to fetch all their blob files at once (posix_fadvise WILLNEED),
then verifies each and stores it into the kernel's page cache of its inode
(FUSE notify_store), as pagecache.py does for Python's read-ahead.  A shuffled
loader then reads them without a READ, and without the GETATTR the kernel
sends after a READ (atime).  It stands in for siblings.py's policy, which
never sees these reads."""
from __future__ import annotations

import logging
import os

import pyfuse3

from ..chunks.cache import ChunkCache
from ..registry.manifest import FileEntry

log = logging.getLogger("artifactfs.mount")
AVAILABLE = hasattr(pyfuse3, "fastpath_register")
FILE_MAX: int = getattr(pyfuse3, "FASTPATH_FILE_MAX", 0)


class NativeReads:
    """Registers version files with the native reader threads (a no-op when
    `enabled` is False or pyfuse3 cannot)."""

    def __init__(self, cache: ChunkCache, enabled: bool = AVAILABLE):
        self.cache = cache
        self.enabled = enabled and AVAILABLE

    def register(self, ino: int, entry: FileEntry, folder: int) -> bool:
        """Have the native threads answer READs of inode `ino`, whose content is
        `entry`, if they can; whether it was registered.  `folder` (an id of the
        file's folder, not 0) groups the files the native read-ahead fetches together."""
        if not self.enabled or entry.ref is not None or len(entry.chunks) != 1 or entry.size > FILE_MAX:
            return False
        copy = self.cache.local_copy(entry.chunks[0])
        if copy is None:
            return False
        try:
            pyfuse3.fastpath_register(ino, bytes.fromhex(entry.chunks[0]), entry.size, os.fsencode(copy.path),
                                      copy.touch, folder)
        except OSError as e:  # a path longer than PATH_MAX, no memory: Python reads the file
            log.debug("inode %d left to the Python reader: %s", ino, e)
            return False
        return True

    def unregister(self, ino: int) -> None:
        """READs of inode `ino` go to Python again (the kernel forgot it)."""
        if self.enabled:
            pyfuse3.fastpath_unregister(ino)

    @staticmethod
    def stats() -> dict[str, int]:
        """READs answered by the native threads so far, files their read-ahead
        stored into the kernel page cache, OPENs of version files they
        answered (noopen.OpenMode.NATIVE), and of those the files they stored
        whole into the page cache before answering (no READ follows) (the stats xattr)."""
        counters = {"native_reads": "fastpath_reads", "native_readahead": "fastpath_ahead",
                    "native_opens": "fastpath_opens", "native_open_stores": "fastpath_open_stores"}
        return {key: int(getattr(pyfuse3, fn)()) if hasattr(pyfuse3, fn) else 0 for key, fn in counters.items()}
