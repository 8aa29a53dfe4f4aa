"""The W&B artifact digest of a version's tree, fast enough for every commit.

manifest.artifact_digest hashes the header and every 'path:digest' line in path
order; a commit of k files into a version of n still has to hash all n lines.
Here each tree's sorted lines are kept as one bytes block, cached by tree key
(trees are immutable), and a parent's block is its children's blocks in order,
prefixed with the child's name by bytes.replace: after the first commit of a
session only the trees on changed paths are re-joined, in C-speed steps.

Order: paths under a folder 'a' are contiguous in global path order (they share
the prefix 'a/'), and a folder sorts among its siblings as 'a/'.

A cached block ends each line with NUL, not newline: a name may hold a newline
(with newlines, 'sub/a\nb' would get the prefix inserted inside its own name) but never NUL,
so prefixing at each NUL is exact; the NULs become newlines when hashed."""
from __future__ import annotations

from collections import OrderedDict
from threading import Lock

import xxhash

from .manifest import DIGEST_HEADER, DirEntry, TreeIO

CACHE_BYTES = 256 * 1024 * 1024


class TreeDigests:
    def __init__(self, io: TreeIO, max_bytes: int = CACHE_BYTES):
        self.io = io
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = Lock()

    def digest(self, root: str) -> str:
        """Equal to artifact_digest(walk(io, root))."""
        h = xxhash.xxh3_128()
        h.update(DIGEST_HEADER.encode())
        h.update(self.block(root).replace(b"\0", b"\n"))
        return h.hexdigest()

    def block(self, key: str) -> bytes:
        """The sorted 'relative/path:digest' lines of the tree `key`, each ended by NUL."""
        with self._lock:
            found = self._blocks.get(key)
            if found is not None:
                self._blocks.move_to_end(key)
                return found
        tree = self.io.load(key)
        parts = []
        for name in sorted(tree, key=lambda n: n + "/" if isinstance(tree[n], DirEntry) else n):
            entry = tree[name]
            if isinstance(entry, DirEntry):
                sub = self.block(entry.tree)
                prefix = name.encode() + b"/"
                parts.append(prefix + sub[:-1].replace(b"\0", b"\0" + prefix) + b"\0" if sub else b"")
            else:
                parts.append(f"{name}:{entry.digest}\0".encode())
        block = b"".join(parts)
        with self._lock:
            self._blocks[key] = block
            self._size += len(block)
            while self._size > self.max_bytes and len(self._blocks) > 1:
                _, old = self._blocks.popitem(last=False)
                self._size -= len(old)
        return block
