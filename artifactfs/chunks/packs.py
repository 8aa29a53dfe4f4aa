"""Small files packed into shared objects (docs/store-format.md 5.6): writing
packs during an upload, and reading packed files back, verified.

On an object store each object costs at least one request, so a `put` of
thousands of small files is request-bound.  A multi-file upload therefore
appends every file smaller than the store's `pack_below` to a *pack*: one
object `packs/<2 hex>/<32 hex>` of about PACK_TARGET bytes, named at random
(it is immutable, but its name is needed before its bytes are all known).  The
file's tree entry records where its bytes are (registry/packs.py: PackSpan);
its digest still names its content, so every read of a packed file is
verified against its own xxh3-128 like a blob."""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future

import xxhash

from ..errors import DigestMismatchError, ObjectNotFound
from ..registry.keys import blob_key, pack_object_key
from ..registry.packs import PackSpan, locate
from ..store.base import ObjectStore

PACK_TARGET = 1024 * 1024  # bytes: a pack is sealed (uploaded) once it holds this much
PACKS_KEPT = 32  # whole packs a PackReader keeps in memory (~32 MiB)


def read_span(store: ObjectStore, key: str, span: PackSpan, length: int, where: str,
              reader: "PackReader | None" = None) -> bytes:
    """The `length` bytes of content `key` at `span`, verified: one ranged GET, or
    a slice of the whole pack through `reader`.  Raises ObjectNotFound when the
    pack is missing, DigestMismatchError (naming `where`) when the bytes there are
    not the content."""
    if reader is not None:
        data = reader.pack(span.pack)[span.at:span.at + length]
    else:
        data = store.get_range(pack_object_key(span.pack), span.at, length)
    if len(data) != length or xxhash.xxh3_128_hexdigest(data) != key:
        if reader is not None:
            reader.forget(span.pack)  # a later read fetches it again
        raise DigestMismatchError(f"{where}: stored data does not match its digest (blob {key} in pack {span.pack})")
    return data


def read_located(store: ObjectStore, key: str, length: int, where: str,
                 reader: "PackReader | None" = None) -> bytes:
    """Content `key` from a pack that a live entry places it in (through `reader`
    when given), else its blob (unverified here: callers verify blobs).  Raises
    ObjectNotFound when neither exists, or the first DigestMismatchError when
    only bad copies do."""
    bad: DigestMismatchError | None = None
    for span in locate(key):
        try:
            return read_span(store, key, span, length, where, reader)
        except ObjectNotFound:
            continue
        except DigestMismatchError as e:
            bad = bad or e
    try:
        return store.get(blob_key(key))
    except ObjectNotFound:
        if bad is not None:
            raise bad from None
        raise


class Packer:
    """Collects the small files of one upload into packs of about PACK_TARGET
    bytes (thread-safe).  A pack is put (in the background on S3) when full and
    by close(); like any put it is durable after the store's sync(), which the
    commit does before its record names the pack.  Equal contents within one
    upload share one span."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.below = store.pack_below
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._name = uuid.uuid4().hex
        self._seen: dict[str, PackSpan] = {}

    def add(self, key: str, data: bytes | memoryview) -> PackSpan:
        """The span where content `key` (= xxh3-128 hex of `data`) will be."""
        with self._lock:
            span = self._seen.get(key)
            if span is None:
                span = self._seen[key] = PackSpan(self._name, len(self._buf))
                self._buf += data
                if len(self._buf) >= PACK_TARGET:
                    self._seal()
            return span

    def _seal(self) -> None:
        if self._buf:
            self.store.put(pack_object_key(self._name), bytes(self._buf))
            self._buf, self._name = bytearray(), uuid.uuid4().hex

    def close(self) -> None:
        """Put the last, partly filled pack."""
        with self._lock:
            self._seal()


class PackReader:
    """Whole packs, each fetched once (one GET of about PACK_TARGET bytes) and
    kept in memory (the PACKS_KEPT most recent), so that a reader of many files
    of a pack (a loader's epoch, a folder read in order) pays one request per
    pack, not one per file.  Thread-safe: threads asking for the same pack
    share one GET.  The bytes are not verified here; every file cut from them
    is (read_span)."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self._lock = threading.Lock()
        self._packs: OrderedDict[str, Future[bytes]] = OrderedDict()

    def pack(self, name: str) -> bytes:
        with self._lock:
            future = self._packs.get(name)
            leader = future is None
            if leader:
                future = self._packs[name] = Future()
                while len(self._packs) > PACKS_KEPT:
                    self._packs.popitem(last=False)
            else:
                self._packs.move_to_end(name)
        assert future is not None
        if leader:
            try:
                future.set_result(self.store.get(pack_object_key(name)))
            except BaseException as e:
                with self._lock:
                    if self._packs.get(name) is future:
                        del self._packs[name]  # not kept: a later read asks again
                future.set_exception(e)
        return future.result()

    def forget(self, name: str) -> None:
        with self._lock:
            self._packs.pop(name, None)
