"""The put/get data path: chunking, the stat-keyed digest cache, and downloads
that are verified, atomic and stay inside their root."""
from __future__ import annotations

import os

import pytest
import xxhash
from conftest import flipped, randbytes, tmpfs
from mountutil import mounted

from artifactfs.chunks import download, hashcache, upload, verify
from artifactfs.errors import ArtifactfsError, DigestMismatchError, StoreError
from artifactfs.registry.manifest import CHUNK_SIZE, apply_changes, b64_digest, default_chunks
from artifactfs.registry.versions import Registry, blob_key


@pytest.fixture
def reg(store_url) -> Registry:
    return Registry.open(store_url, create=True)


@pytest.fixture
def digest_cache(tmp_path, monkeypatch) -> str:
    """A private digest cache that trusts files at once (no racy window)."""
    path = str(tmp_path / "digests.sqlite")
    monkeypatch.setenv("ARTIFACTFS_HASH_CACHE", path)
    monkeypatch.setattr(hashcache, "RACY_NS", -10**12)
    return path


def bytes_read() -> int:
    """Bytes this process has read with read(2) and friends so far."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize("size", [0, 1, 65536, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 5])
def test_chunking_round_trip(reg, tmp_path, size):
    data = randbytes(min(size, 4096)) * (size // 4096 + 1)
    data = data[:size]
    entry = upload.upload_file(reg, write(tmp_path / "src" / "f", data))
    assert entry.size == size and entry.digest == b64_digest(xxhash.xxh3_128_digest(data))
    if size <= CHUNK_SIZE:
        assert entry.chunks == default_chunks(entry.digest, size)
    else:
        assert entry.chunks == tuple(xxhash.xxh3_128_hexdigest(data[i:i + CHUNK_SIZE])
                                     for i in range(0, size, CHUNK_SIZE))
    for key in entry.chunks:
        assert reg.store.exists(blob_key(key))
    download.download_many(reg, str(tmp_path / "out"), [("d/f", entry)])
    assert (tmp_path / "out" / "d" / "f").read_bytes() == data


def test_sparse_file_comes_back_sparse_without_reading_its_holes(reg, tmp_path):
    """Whole chunks of zeros (holes, or zeros written out) are left as holes by
    get, as `cp --sparse=auto` leaves them, and their blob is never read: its key
    says what it holds.  Before, a 1 GiB sparse checkpoint came back 1 GiB on disk."""
    src = str(tmp_path / "src" / "sparse")
    os.makedirs(os.path.dirname(src))
    with open(src, "wb") as f:
        f.write(b"head")
        f.seek(3 * CHUNK_SIZE)
        f.write(b"middle")
        f.truncate(6 * CHUNK_SIZE)           # three whole chunks of zeros at the end
    entry = upload.upload_file(reg, src)
    zeros = download.zero_chunk_key()
    assert entry.chunks.count(zeros) == 4    # chunks 1, 2 (hole), 4, 5 (end)
    reg.store.delete(blob_key(zeros))        # never read: its absence must not matter
    download.download_many(reg, str(tmp_path / "out"), [("sparse", entry)])
    out = str(tmp_path / "out" / "sparse")
    with open(src, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()
    assert os.stat(out).st_size == 6 * CHUNK_SIZE
    assert os.stat(out).st_blocks * 512 <= 2 * CHUNK_SIZE  # chunks 0 and 3 only


def test_unchanged_file_is_not_read_again(reg, tmp_path, digest_cache):
    path = write(tmp_path / "src" / "big", randbytes(4 << 20))
    first = upload.upload_many(reg, [path])
    before = bytes_read()
    again = upload.upload_many(reg, [path])
    assert again == first
    assert bytes_read() - before < 1 << 20


def test_changed_file_is_hashed_again_even_with_its_mtime_restored(reg, tmp_path, digest_cache):
    path = write(tmp_path / "src" / "f", b"a" * 1000)
    st = os.stat(path)
    first = upload.upload_many(reg, [path])[0]
    write(path, b"b" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only ctime differs
    second = upload.upload_many(reg, [path])[0]
    assert second.digest == b64_digest(xxhash.xxh3_128_digest(b"b" * 1000)) != first.digest


def test_remembered_file_whose_blob_is_gone_is_stored_again(reg, tmp_path, digest_cache):
    path = write(tmp_path / "src" / "f", b"payload" * 100)
    entry = upload.upload_many(reg, [path])[0]
    reg.store.delete(blob_key(entry.chunks[0]))
    assert upload.upload_many(reg, [path])[0] == entry
    assert reg.store.exists(blob_key(entry.chunks[0]))


def test_freshly_written_files_are_not_remembered(reg, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTFS_HASH_CACHE", str(tmp_path / "digests.sqlite"))
    path = write(tmp_path / "src" / "f", b"new")
    upload.upload_many(reg, [path])
    cache = hashcache.HashCache.open()
    assert cache is not None and cache.lookup([os.stat(path)]) == [None]
    cache.flush()


def test_cache_can_be_turned_off(reg, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTFS_HASH_CACHE", "off")
    assert hashcache.HashCache.open() is None
    path = write(tmp_path / "src" / "f", b"x")
    assert upload.upload_many(reg, [path])[0].size == 1


def test_unusable_cache_location_only_costs_speed(reg, tmp_path, monkeypatch):
    blocker = write(tmp_path / "file", b"")
    monkeypatch.setenv("ARTIFACTFS_HASH_CACHE", os.path.join(blocker, "digests.sqlite"))
    path = write(tmp_path / "src" / "f", b"x")
    assert upload.upload_many(reg, [path])[0].size == 1


def test_corrupt_blob_leaves_no_file_and_no_temp(reg, tmp_path):
    data = randbytes(3000)
    entry = upload.upload_file(reg, write(tmp_path / "src" / "f", data))
    blob = reg.store.local_path(blob_key(entry.chunks[0]))
    with open(blob, "r+b") as f:
        f.write(flipped(data[:1]))  # a first byte that certainly differs
    out = tmp_path / "out"
    with pytest.raises(DigestMismatchError, match="a/f"):
        download.download_many(reg, str(out), [("a/f", entry)])
    assert os.listdir(out / "a") == []


def test_longer_blob_is_a_mismatch(reg, tmp_path):
    entry = upload.upload_file(reg, write(tmp_path / "src" / "f", b"abc"))
    with open(reg.store.local_path(blob_key(entry.chunks[0])), "ab") as f:
        f.write(b"extra")
    with pytest.raises(DigestMismatchError):
        download.download_many(reg, str(tmp_path / "out"), [("f", entry)])


def test_existing_matching_file_is_left_and_others_replaced(reg, tmp_path):
    e1 = upload.upload_file(reg, write(tmp_path / "src" / "one", b"one"))
    e2 = upload.upload_file(reg, write(tmp_path / "src" / "two", b"two"))
    out = tmp_path / "out"
    write(out / "one", b"one")
    write(out / "two", b"old")
    ino = os.stat(out / "one").st_ino
    download.download_many(reg, str(out), [("one", e1), ("two", e2)])
    assert os.stat(out / "one").st_ino == ino
    assert (out / "two").read_bytes() == b"two"


def test_file_in_the_way_of_a_directory_is_refused(reg, tmp_path):
    entry = upload.upload_file(reg, write(tmp_path / "src" / "f", b"x"))
    out = tmp_path / "out"
    write(out / "a", b"I am a file")
    with pytest.raises(ArtifactfsError, match="not a directory"):
        download.download_many(reg, str(out), [("a/b/f", entry)])
    assert (out / "a").read_bytes() == b"I am a file"


def test_many_files_in_many_directories(reg, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "DIR_BATCH", 3)  # several batches of directory fds
    items = []
    for i in range(40):
        data = f"file {i}".encode()
        items.append((f"d{i % 7}/s{i % 3}/f{i}", upload.upload_file(reg, write(tmp_path / "src" / str(i), data))))
    out = tmp_path / "out"
    download.download_many(reg, str(out), items)
    for i, (path, _) in enumerate(items):
        assert (out / path).read_bytes() == f"file {i}".encode()
    assert verify.verify_dir(str(out), items) == []


def test_files_on_a_fuse_mount_are_never_remembered(reg, store_url, tmp_path, digest_cache):
    """A FUSE daemon chooses inode numbers and times; a remount may reuse them for other files."""
    src = write(tmp_path / "src" / "f", b"through fuse")
    upload.upload_many(reg, [src])  # on the local disk: remembered
    entry = upload.upload_file(reg, src)
    reg.commit("proj", "c", "dataset", apply_changes(reg, None, {"f": entry}), "d")
    with mounted(store_url, tmp_path / "mnt") as m:
        inside = os.path.join(m.path, "c", "c:v0", "f")
        assert upload.upload_many(None, [inside])[0].digest == entry.digest
        cache = hashcache.HashCache.open()
        assert cache.lookup([os.stat(inside)]) == [None]
        assert cache.lookup([os.stat(src)]) != [None]
        cache.flush()



def test_full_store_disk_is_a_store_error(tmp_path):
    """A real, tiny tmpfs holds the store: ENOSPC names the store, not the source file."""
    with tmpfs(tmp_path / "small", "1m") as small:
        reg = Registry.open(str(small / "store"), create=True)
        src = write(tmp_path / "src" / "f", randbytes(3 << 20))
        with pytest.raises(StoreError, match="cannot write to the store.*No space left"):
            upload.upload_many(reg, [src])


@pytest.mark.parametrize("stored", [3, 40])  # few keys per directory: stat each; many: list it
def test_local_store_present(reg, stored):
    keys = [f"blobs/aa/{i:032x}" for i in range(stored)]
    for k in keys:
        reg.store.put(k, b"x")
    missing = [f"blobs/aa/{i:032x}" for i in range(stored, stored + 10)] + ["blobs/bb/" + "0" * 32]
    assert reg.store.present(keys + missing) == set(keys)
