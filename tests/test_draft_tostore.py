"""Publishing a draft at disk speed (issue 10), in-process over a local store:
digests taken while a file is written in order (and dropped for any other
write), the chunks of such a file moved into the store without reading them
(a one-chunk file becomes its blob by link(2): the data file is copy-on-write
from then on), the complete chunks of a file still being written stored ahead
of the commit (and never under a key their bytes do not have),
LocalStore.sync() fsyncing only what this process wrote, and `put` of a big
file copying its chunks in the kernel while a helper thread hashes the chunk
before."""
from __future__ import annotations

import gc
import os
import random

import pytest
import xxhash
from conftest import randbytes
from draft_helpers import Paths, open_test_draft, publish, version_files

from artifactfs.chunks import upload
from artifactfs.chunks.digests import RunningDigest
from artifactfs.drafts.advance import reclaim
from artifactfs.drafts.commit import commit_draft, draft_changes
from artifactfs.drafts.lifecycle import export_files
from artifactfs.drafts.tostore import store_ahead
from artifactfs.errors import StoreError
from artifactfs.registry.keys import blob_key
from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry
from artifactfs.store import local

SIZES = [0, 1, 4096, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 12345]


@pytest.fixture
def reg(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("ARTIFACTFS_HASH_CACHE", "off")
    return Registry.open(str(tmp_path / "store"), create=True)


def pieces(data: bytes, seed: int) -> list[tuple[int, bytes]]:
    """`data` cut into writes of seeded random sizes, in order."""
    rnd, out, off = random.Random(seed), [], 0
    while off < len(data):
        n = rnd.choice([1, 100, 4096, 131072, 1 << 20, 3 << 20])
        out.append((off, data[off:off + n]))
        off += n
    return out


@pytest.mark.parametrize("size", SIZES)
def test_running_digest_equals_hashing_the_file(tmp_path, size):
    data = randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    r = RunningDigest()
    for off, piece in pieces(data, size):
        assert r.add(off, piece)
    whole = upload.upload_file(None, str(path))
    assert (r.result().digest, r.result().size, r.result().chunks) == (whole.digest, whole.size, whole.chunks)
    assert not r.add(size + 1, b"x") and (size == 0 or not r.add(size - 1, b"x")), "only the next byte continues it"
    assert r.result().size == size


def _stored(reg: Registry, p: Paths, monkeypatch) -> list[str]:
    """Commit; the data files the commit had to read and hash (by inode id)."""
    read: list[str] = []
    real = upload.upload_many

    def counting(registry, paths, progress=None):
        read.extend(os.path.basename(x) for x in paths)
        return real(registry, paths, progress)
    monkeypatch.setattr(upload, "upload_many", counting)
    commit_draft(reg, p.draft)
    return read


def test_files_written_in_order_are_not_read_at_commit(reg, monkeypatch):
    """(The mount holds the inodes the kernel knows; so does `held` here: the
    digests live on the inode object.)"""
    p = Paths(open_test_draft(reg, "w"))
    want = {}
    held = [p.create(name) for name in ("late", "again", "cut", "emptied")]
    for i, size in enumerate(SIZES):
        data = randbytes(size)
        held.append(p.create(f"f{i}"))
        for off, piece in pieces(data, i):
            p.write(f"f{i}", piece, off)
        want[f"f{i}"] = (data, False)
    out_of_order = randbytes(CHUNK_SIZE + 10)
    p.write("late", out_of_order[100:], 100)
    p.write("late", out_of_order[:100], 0)
    rewritten = randbytes(5000)
    p.write("again", b"z" * 5000)
    p.write("again", rewritten)
    p.write("cut", b"0123456789")
    p.truncate("cut", 4)
    p.write("emptied", b"old bytes")
    p.truncate("emptied", 0)
    p.write("emptied", b"new")
    want.update(late=(out_of_order, False), again=(rewritten, False), cut=(b"0123", False),
                emptied=(b"new", False))
    ids = {name: str(p.node(name).id) for name in ("late", "again", "cut")}
    read = _stored(reg, p, monkeypatch)
    assert sorted(read) == sorted(ids.values()), "only files not written in order are read"
    assert version_files(reg, "w", 0, project="proj") == want


def test_files_the_kernel_forgot_before_the_commit_are_not_read_either(reg, monkeypatch):
    """Nothing holds the inodes between the writes and the commit (the kernel may
    forget them, a few thousand files into a cp -r): the draft keeps the ones with
    a running digest until the commit, and only until then."""
    p = Paths(open_test_draft(reg, "w"))
    files = {f"d/f{i}": randbytes(1000 + i) for i in range(20)}
    p.mkdir("d")
    for path, data in files.items():
        p.create(path)
        p.write(path, data)
    gc.collect()
    assert len(p.draft.digesting) == 20
    assert _stored(reg, p, monkeypatch) == []
    assert version_files(reg, "w", 0, project="proj") == {k: (v, False) for k, v in files.items()}
    assert p.draft.digesting == {}, "the commit's stamps know them now"


def test_copy_up_of_base_bytes_is_read_at_commit(reg, tmp_path, monkeypatch):
    publish(reg, str(tmp_path / "pub"), "ds", {"a": b"base bytes"})
    p = Paths(open_test_draft(reg))
    p.write("a", b"B", 0)  # the rest of the file came from the base, not from writes
    read = _stored(reg, p, monkeypatch)
    assert read == [str(p.node("a").id)]
    assert version_files(reg, "ds", 1)["a"] == (b"Base bytes", False)


def _blob_path(reg: Registry, key: str) -> str:
    return os.path.join(reg.store.root, blob_key(key))


def test_a_one_chunk_file_becomes_its_blob_and_later_writes_copy_it(reg):
    p = Paths(open_test_draft(reg, "w"))
    data = randbytes(100_000)
    held = p.create("m")
    p.write("m", data)
    ino = p.node("m")
    found, _ = draft_changes(reg, p.draft)  # stored, not yet published nor given back
    entry = found.changes["m"]
    blob, staged = _blob_path(reg, entry.chunks[0]), p.draft.data_path(ino)
    assert os.stat(blob).st_ino == os.stat(staged).st_ino, "linked, not copied"
    assert os.stat(blob).st_mode & 0o777 == 0o644
    p.write("m", b"CHANGED", 10)
    p.truncate("m", 50_000)
    with open(blob, "rb") as f:
        assert f.read() == data, "the blob never changes"
    assert os.stat(staged).st_nlink == 1 and os.stat(blob).st_ino != os.stat(staged).st_ino
    assert p.read("m") == data[:10] + b"CHANGED" + data[17:50_000]
    commit_draft(reg, p.draft)
    assert version_files(reg, "w", 0)["m"] == (data[:10] + b"CHANGED" + data[17:50_000], False)


def test_big_files_are_copied_by_chunk_and_the_staged_file_is_given_back(reg):
    p = Paths(open_test_draft(reg, "w"))
    data = randbytes(2 * CHUNK_SIZE + 7)
    held = p.create("big")
    p.write("big", data)
    staged = p.draft.data_path(p.node("big"))
    assert commit_draft(reg, p.draft).line == "w:v0"
    entry = reg.lookup(reg.version("proj", "w", 0).root, "big")
    for i, key in enumerate(entry.chunks):
        with open(_blob_path(reg, key), "rb") as f:
            piece = f.read()
        assert xxhash.xxh3_128_hexdigest(piece) == key and piece == data[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]
    assert reclaim(p.draft) == 1 and not os.path.exists(staged), "given back after the commit"
    assert p.read("big") == data


def _written_in_order(reg: Registry, size: int) -> tuple[Paths, bytes]:
    """A draft whose file "big" of `size` random bytes was written in one go."""
    p = Paths(open_test_draft(reg, "w"))
    data = randbytes(size)
    p.held = p.create("big")  # the mount holds the inodes the kernel knows (the digest lives on it)
    p.write("big", data)
    return p, data


def test_chunks_stored_ahead_are_the_ones_the_commit_uses(reg):
    """store_ahead copies each complete chunk of a file written in order into the
    store under its key; the commit then finds them there and leaves them as they
    are (same inode: not copied again)."""
    p, data = _written_in_order(reg, 3 * CHUNK_SIZE + 999)
    ino = p.node("big")
    running = ino.running
    assert running is not None and len(running.keys) == 3
    assert [store_ahead(reg.store, p.draft, ino, running, i) for i in range(4)] == [True, True, True, False]
    assert store_ahead(reg.store, p.draft, ino, running, 0) is False, "present: not copied again"
    ahead = {k: os.stat(_blob_path(reg, k)).st_ino for k in running.keys}
    for i, key in enumerate(running.keys):
        with open(_blob_path(reg, key), "rb") as f:
            assert f.read() == data[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]
    assert commit_draft(reg, p.draft).line == "w:v0"
    entry = reg.lookup(reg.version("proj", "w", 0).root, "big")
    assert list(entry.chunks[:3]) == list(ahead)
    assert {k: os.stat(_blob_path(reg, k)).st_ino for k in ahead} == ahead
    assert version_files(reg, "w", 0)["big"] == (data, False)
    assert not [n for n in os.listdir(reg.store.root) if "#" in n]


def test_a_chunk_overwritten_while_stored_ahead_is_not_stored_under_its_old_key(reg, monkeypatch):
    """A write over bytes already hashed, landing while store_ahead copies them, ends
    the running digest: the copy is dropped, nothing is stored under the key of the
    old bytes, and the commit reads the file and publishes what it holds now."""
    p, data = _written_in_order(reg, 2 * CHUNK_SIZE + 10)
    ino = p.node("big")
    running = ino.running
    old_key = running.keys[0]
    real = type(reg.store).copy_in

    def copy_then_overwrite(self, src, offset, length):
        got = real(self, src, offset, length)
        p.write("big", b"NEW", 100)  # as a writer would, between the copy and the check
        return got
    monkeypatch.setattr(type(reg.store), "copy_in", copy_then_overwrite)
    assert store_ahead(reg.store, p.draft, ino, running, 0) is False
    monkeypatch.setattr(type(reg.store), "copy_in", real)
    assert ino.running is None and not os.path.exists(_blob_path(reg, old_key))
    assert not [n for n in os.listdir(reg.store.root) if "#" in n], "the copy was removed"
    assert store_ahead(reg.store, p.draft, ino, running, 1) is False, "it no longer follows the file"
    commit_draft(reg, p.draft)
    assert version_files(reg, "w", 0)["big"] == (data[:100] + b"NEW" + data[103:], False)


def test_a_set_aside_draft_exports_a_copy_of_a_shared_data_file(reg):
    p = Paths(open_test_draft(reg, "w"))
    held = p.create("m")
    p.write("m", b"payload")
    found, _ = draft_changes(reg, p.draft)
    blob = _blob_path(reg, found.changes["m"].chunks[0])
    p.draft.close()  # (as put_aside's caller does: meta.db is locked while a draft is open)
    export_files(p.draft.dir)
    exported = os.path.join(p.draft.dir, "files", "m")
    with open(exported, "r+b") as f:
        f.write(b"EDITED!")
    with open(blob, "rb") as f:
        assert f.read() == b"payload"


def test_sync_fsyncs_only_our_objects_while_they_are_few(reg, monkeypatch):
    synced: list[str] = []
    real = os.fdatasync

    def seen(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fdatasync", seen)
    whole_fs: list[bool] = []
    monkeypatch.setattr(local.LocalStore, "_syncfs", lambda self: whole_fs.append(True))
    store = reg.store
    store.sync()
    synced.clear()
    store.put("a/x", b"1")
    store.put_new("a/y", b"2")
    store.put_new("a/y", b"2")  # present: relied on, so synced too
    store.sync()
    assert sorted(os.path.relpath(s, store.root) for s in synced) == ["a/x", "a/y"] and not whole_fs
    synced.clear()
    store.sync()
    assert synced == [], "nothing written since"
    for i in range(local.SYNC_EACH_MAX + 1):
        store.put(f"b/{i}", b"x")
    store.sync()
    assert whole_fs == [True] and synced == []


@pytest.mark.parametrize("size", [CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE - 5])
def test_put_of_a_big_file_copies_chunks_in_the_kernel_and_hashes_them_in_place(reg, tmp_path, size):
    """upload_file into a local store (LocalStore.copy_in, then name): the same entry as
    hashing alone, every blob its chunk, no temporary object left, and a second
    upload finds every chunk present."""
    data = randbytes(size)
    path = tmp_path / "big"
    path.write_bytes(data)
    entry = upload.upload_file(reg, str(path))
    hashed = upload.upload_file(None, str(path))
    assert (entry.digest, entry.size, entry.chunks) == (hashed.digest, hashed.size, hashed.chunks)
    for i, key in enumerate(entry.chunks):
        with open(_blob_path(reg, key), "rb") as f:
            assert f.read() == data[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]
    assert not [n for n in os.listdir(reg.store.root) if "#" in n]
    before = {k: os.stat(_blob_path(reg, k)).st_ino for k in entry.chunks}
    assert upload.upload_file(reg, str(path)).chunks == entry.chunks
    assert {k: os.stat(_blob_path(reg, k)).st_ino for k in entry.chunks} == before, "present: not rewritten"
    assert not [n for n in os.listdir(reg.store.root) if "#" in n]


def test_put_of_a_big_file_that_cannot_be_stored_leaves_no_temporary_object(reg, tmp_path, monkeypatch):
    """A chunk that fails while the next one is being copied (a full disk): one
    StoreError, and neither chunk's temporary object is left in the store."""
    path = tmp_path / "big"
    path.write_bytes(randbytes(3 * CHUNK_SIZE))
    real, named = local.LocalStore.name_as, []

    def full_at_second(self, incoming, key):
        named.append(key)
        if len(named) == 2:
            local.LocalStore.discard(incoming)
            raise OSError(28, "No space left on device")
        return real(self, incoming, key)
    monkeypatch.setattr(local.LocalStore, "name_as", full_at_second)
    with pytest.raises(StoreError, match="No space left"):
        upload.upload_file(reg, str(path))
    assert len(named) == 2
    assert not [n for n in os.listdir(reg.store.root) if "#" in n]
