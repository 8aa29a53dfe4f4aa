"""A file's digests as the store names it: the W&B digest of the whole file and
the blob key of each CHUNK_SIZE piece, with the one rule that a file of one
piece is stored as one blob named by its own digest (docs/store-format.md 3.5).

`finish` applies that rule for every hasher (chunks/upload.py reads files;
RunningDigest follows a draft's staged file while it is written, so that a
commit does not read it again).  A sequential writer (cp, torch.save, a download) hands the daemon its bytes in
order from offset 0.  A RunningDigest follows such a file: the xxh3-128 of the
whole file (its W&B digest) and of each CHUNK_SIZE piece (its blob keys,
docs/store-format.md 3.5), updated as each write reaches the data file.  Any
other change (a write that is not at the end, a second write over bytes already
hashed, a truncate to another size, a copy-up of base bytes) ends it: the
commit then reads and hashes the file as before.  It lives in memory only; after
a restart every staged file is read again once."""
from __future__ import annotations

from dataclasses import dataclass, field

import xxhash

from ..registry.manifest import CHUNK_SIZE, b64_digest


@dataclass(frozen=True)
class Digests:
    """What a commit needs of a file's bytes: the W&B digest (base64), the size in
    bytes and the blob keys of its consecutive CHUNK_SIZE pieces (hex)."""

    digest: str
    size: int
    chunks: tuple[str, ...]


@dataclass
class RunningDigest:
    """The digests of the bytes [0, size) of a file, written in order."""

    size: int = 0
    whole: "xxhash.xxh3_128" = field(default_factory=xxhash.xxh3_128)
    piece: "xxhash.xxh3_128" = field(default_factory=xxhash.xxh3_128)
    keys: list[str] = field(default_factory=list)

    def add(self, off: int, data: bytes | memoryview) -> bool:
        """Take the bytes written at `off`; False (and nothing taken) when they do
        not continue the file exactly at its end."""
        if off != self.size:
            return False
        view = memoryview(data)
        self.whole.update(view)
        while view:
            room = CHUNK_SIZE - self.size % CHUNK_SIZE
            part, view = view[:room], view[room:]
            self.piece.update(part)
            self.size += len(part)
            if self.size % CHUNK_SIZE == 0:
                self.keys.append(self.piece.hexdigest())
                self.piece.reset()
        return True

    def result(self) -> Digests:
        """The digests of what was taken (chunk keys as chunks.upload.upload_file gives them)."""
        keys = list(self.keys)
        if self.size % CHUNK_SIZE:
            keys.append(self.piece.hexdigest())
        return finish(self.whole, self.size, keys)


def finish(whole: "xxhash.xxh3_128", size: int, keys: list[str]) -> Digests:
    """The Digests of a file of `size` bytes whose bytes `whole` hashed, its pieces
    hashed one by one into `keys`: a file of one piece (or none) is stored as one
    blob named by its own digest."""
    raw = whole.digest()
    if size <= CHUNK_SIZE:
        return Digests(b64_digest(raw), size, (raw.hex(),) if size else ())
    return Digests(b64_digest(raw), size, tuple(keys))
