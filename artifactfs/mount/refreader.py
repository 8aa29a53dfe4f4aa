"""Reading a reference entry through the mount: its bytes come from its URI
(references.open_source), in CHUNK_SIZE ranges fetched on demand in a worker
thread, each checked against the recorded ETag or file signature.  A changed or
vanished source raises (EIO for the reader, one log line naming the URI); bytes
other than the recorded ones are never returned."""
from __future__ import annotations

from ..chunks.references import Source, open_source
from ..errors import ArtifactfsError
from ..registry.manifest import CHUNK_SIZE, FileEntry
from .context import MountContext
from .handles import Handle


class ReferenceReader(Handle):
    """An open reference file; keeps the last range it fetched."""

    keep_cache = immutable = True  # the recorded bytes never change: a source that does is refused

    def __init__(self, ctx: MountContext, entry: FileEntry, where: str):
        self.ctx = ctx
        self.entry = entry
        self.where = where
        self.source: Source = open_source(entry)  # ReferenceUnreadable for a URI-only entry
        self._index = -1
        self._data = b""

    async def read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.entry.size)
        parts = []
        while off < end:
            index = off // CHUNK_SIZE
            if index != self._index:
                try:
                    self._data = await self.ctx.run(self.source.read, index * CHUNK_SIZE, CHUNK_SIZE)
                except ArtifactfsError as e:  # name the file as well as the URI in the one log line
                    raise type(e)(f"{self.where}: {e}") from None
                self._index = index
            base = index * CHUNK_SIZE
            stop = min(end, base + len(self._data))
            if stop <= off:  # shorter than recorded: the source changed under a check we trust
                break
            parts.append(self._data[off - base:stop - base])
            off = stop
        return b"".join(parts)
