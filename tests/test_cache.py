"""ChunkCache on a real S3 store (moto server) and on a local store: fetch once,
hit after, shared by several instances, LRU eviction under the cap, digest checks."""
from __future__ import annotations

import fcntl
import multiprocessing
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import xxhash
from conftest import flipped, randbytes, tmpfs
from s3server import s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs.chunks.cache import ChunkCache, default_cache_dir, parse_size
from artifactfs.errors import CorruptStoreError, DigestMismatchError, ObjectNotFound
from artifactfs.registry.versions import Registry, blob_key

MiB = 1 << 20


def put_blob(reg: Registry, data: bytes) -> str:
    key = xxhash.xxh3_128_hexdigest(data)
    reg.put_blob(key, data)
    return key


def replace_blob(reg: Registry, key: str, data: bytes) -> None:
    """Overwrite a stored blob, after every earlier put has landed: an S3 store uploads in
    the background, and two puts of one key in flight may land in either order."""
    reg.store.sync()
    reg.store.put(blob_key(key), data)
    reg.store.sync()


def cached_files(cache_dir: str) -> dict[str, int]:
    """key -> size of every blob file in the cache directory: a consistent snapshot,
    taken under the cache's lock as any process sharing the directory would."""
    out = {}
    if not os.path.exists(cache_dir):
        return out
    fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for dirpath, _, names in os.walk(os.path.join(cache_dir, "blobs")):
            for n in names:
                out[n] = os.path.getsize(os.path.join(dirpath, n))
    finally:
        os.close(fd)
    return out


@pytest.fixture
def s3_reg(s3_url: str) -> Registry:
    return Registry.open(s3_url, create=True)


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


def test_first_read_fetches_second_hits(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(3 * MiB + 5)
    key = put_blob(s3_reg, data)
    cache = ChunkCache(s3_reg, cache_dir, 100 * MiB)
    assert cache.read_chunk(key, len(data), "a/file.bin") == data
    s = cache.stats()
    assert (s["fetches"], s["bytes_fetched"], s["hits"], s["cache_bytes"]) == (1, len(data), 0, len(data))
    assert cache.read_chunk(key, len(data), "a/file.bin") == data
    s = cache.stats()
    assert (s["fetches"], s["bytes_fetched"], s["hits"]) == (1, len(data), 1)
    assert cached_files(cache_dir) == {key: len(data)}


def test_two_caches_share_one_directory(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(MiB)
    key = put_blob(s3_reg, data)
    first, second = ChunkCache(s3_reg, cache_dir, 10 * MiB), ChunkCache(s3_reg, cache_dir, 10 * MiB)
    assert first.read_chunk(key, len(data), "f") == data
    assert second.read_chunk(key, len(data), "f") == data
    assert second.stats()["fetches"] == 0 and second.stats()["hits"] == 1
    third = ChunkCache(s3_reg, cache_dir, 10 * MiB)  # a later mount knows the current size
    assert third.stats()["cache_bytes"] == MiB


def test_same_key_from_many_threads_is_fetched_once(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(8 * MiB)
    key = put_blob(s3_reg, data)
    cache = ChunkCache(s3_reg, cache_dir, 100 * MiB)
    barrier = threading.Barrier(16)

    def read(_: int) -> bytes:
        barrier.wait()
        return cache.read_chunk(key, len(data), "big")
    with ThreadPoolExecutor(16) as pool:
        assert all(d == data for d in pool.map(read, range(16)))
    assert cache.stats()["fetches"] == 1 and cache.stats()["bytes_fetched"] == len(data)


def test_eviction_removes_least_recently_used_first(s3_reg: Registry, cache_dir: str) -> None:
    blobs = [randbytes(MiB) for _ in range(4)]
    keys = [put_blob(s3_reg, b) for b in blobs]
    cache = ChunkCache(s3_reg, cache_dir, 3 * MiB + MiB // 2)
    for i in (0, 1, 2, 0):  # blob 0 read again: blob 1 is now the least recently used
        assert cache.read_chunk(keys[i], MiB, f"f{i}") == blobs[i]
    assert cache.stats()["evictions"] == 0
    assert cache.read_chunk(keys[3], MiB, "f3") == blobs[3]
    files = cached_files(cache_dir)
    assert set(files) == {keys[0], keys[2], keys[3]}
    s = cache.stats()
    assert s["evictions"] == 1 and s["cache_bytes"] == sum(files.values()) == 3 * MiB
    assert cache.read_chunk(keys[1], MiB, "f1") == blobs[1]  # evicted: fetched again
    assert cache.stats()["fetches"] == 5


def test_cap_holds_across_caches_sharing_a_directory(s3_reg: Registry, cache_dir: str) -> None:
    blobs = [randbytes(256 * 1024) for _ in range(12)]
    keys = [put_blob(s3_reg, b) for b in blobs]
    cap = MiB
    caches = [ChunkCache(s3_reg, cache_dir, cap) for _ in range(2)]  # two "mounts"

    def read(i: int) -> None:
        c = caches[i % 2]
        assert c.read_chunk(keys[i % 12], len(blobs[i % 12]), f"f{i}") == blobs[i % 12]
        assert sum(cached_files(cache_dir).values()) <= cap
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, range(48)))
    total = sum(cached_files(cache_dir).values())
    assert total <= cap and all(c.stats()["cache_bytes"] == total for c in caches)
    assert sum(c.stats()["evictions"] for c in caches) > 0


def _mount_like_reader(url: str, cache_dir: str, keys: list[str], size: int, cap: int) -> dict[str, int]:
    """Run in a separate process: read every key three times through its own ChunkCache."""
    cache = ChunkCache(Registry.open(url), cache_dir, cap)
    for _ in range(3):
        for k in keys:
            cache.read_chunk(k, size, k)  # verified against k, or it raises
    return cache.stats()


def test_cap_holds_across_processes(s3_url: str, cache_dir: str) -> None:
    reg = Registry.open(s3_url, create=True)
    keys = [put_blob(reg, randbytes(256 * 1024)) for _ in range(10)]
    cap = MiB
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        result = pool.starmap_async(_mount_like_reader, [(s3_url, cache_dir, keys, 256 * 1024, cap),
                                                         (s3_url, cache_dir, keys[::-1], 256 * 1024, cap)])
        while not result.ready():  # the cap holds all along, not just at the end
            assert sum(cached_files(cache_dir).values()) <= cap
            time.sleep(0.002)
        stats = result.get()
    files = cached_files(cache_dir)
    assert 0 < sum(files.values()) <= cap
    with open(os.path.join(cache_dir, "size")) as f:
        assert int(f.read()) == sum(files.values())  # the shared total is exact
    assert all(s["evictions"] > 0 and s["fetches"] >= 10 for s in stats)


def test_corrupted_cache_file_is_detected_and_fetched_again(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(MiB)
    key = put_blob(s3_reg, data)
    cache = ChunkCache(s3_reg, cache_dir, 10 * MiB)
    cache.read_chunk(key, len(data), "f")
    path = os.path.join(cache_dir, "blobs", key[:2], key)
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00garbage\x00")
    assert cache.read_chunk(key, len(data), "f") == data
    assert cache.stats()["fetches"] == 2 and cache.stats()["hits"] == 0
    with open(path, "rb") as f:
        assert f.read() == data  # the bad copy was replaced by a verified one
    os.truncate(path, 10)  # a short file, too
    assert cache.read_chunk(key, len(data), "f") == data
    assert cache.stats()["fetches"] == 3 and cache.stats()["cache_bytes"] == len(data)


def test_vanished_cache_file_is_fetched_again(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(1000)
    key = put_blob(s3_reg, data)
    cache = ChunkCache(s3_reg, cache_dir, 10 * MiB)
    cache.read_chunk(key, len(data), "f")
    os.unlink(os.path.join(cache_dir, "blobs", key[:2], key))  # as if another mount evicted it
    assert cache.read_chunk(key, len(data), "f") == data
    assert cache.stats()["fetches"] == 2


def test_corrupted_store_blob_raises_naming_the_file(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(MiB)
    key = put_blob(s3_reg, data)
    replace_blob(s3_reg, key, flipped(data))
    cache = ChunkCache(s3_reg, cache_dir, 10 * MiB)
    with pytest.raises(DigestMismatchError, match="models/weights.bin"):
        cache.read_chunk(key, len(data), "models/weights.bin")
    assert cached_files(cache_dir) == {} and cache.stats()["cache_bytes"] == 0
    replace_blob(s3_reg, key, data)
    with pytest.raises(DigestMismatchError, match="short.bin"):
        cache.read_chunk(key, len(data) + 1, "short.bin")  # right bytes, wrong length
    assert cached_files(cache_dir) == {}


def test_concurrent_readers_of_a_bad_blob_each_get_their_own_file_named(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(4 * MiB)
    key = put_blob(s3_reg, data)
    replace_blob(s3_reg, key, flipped(data, 0))
    cache = ChunkCache(s3_reg, cache_dir, 100 * MiB)
    barrier = threading.Barrier(8)

    def read(i: int) -> str:
        barrier.wait()
        with pytest.raises(DigestMismatchError) as e:
            cache.read_chunk(key, len(data), f"dir/file{i}.bin")
        return str(e.value)
    with ThreadPoolExecutor(8) as pool:
        messages = list(pool.map(read, range(8)))
    assert all(m.startswith(f"dir/file{i}.bin: ") for i, m in enumerate(messages))
    assert cached_files(cache_dir) == {}


def test_missing_blob_and_bad_key(s3_reg: Registry, cache_dir: str) -> None:
    cache = ChunkCache(s3_reg, cache_dir, MiB)
    with pytest.raises(ObjectNotFound, match="lost.txt: blob 0{32} is missing"):
        cache.read_chunk("0" * 32, 10, "lost.txt")
    with pytest.raises(CorruptStoreError, match="x.txt"):
        cache.read_chunk("../../etc/passwd", 10, "x.txt")


def test_zero_cap_verifies_but_keeps_nothing(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(1000)
    key = put_blob(s3_reg, data)
    cache = ChunkCache(s3_reg, cache_dir, 0)
    assert cache.read_chunk(key, len(data), "f") == data
    assert cache.read_chunk(key, len(data), "f") == data
    assert cache.stats()["fetches"] == 2 and cached_files(cache_dir) == {}


def test_cache_directories_are_private(s3_reg: Registry, cache_dir: str) -> None:
    data = randbytes(100)
    key = put_blob(s3_reg, data)
    cache = ChunkCache(s3_reg, cache_dir, MiB)
    cache.read_chunk(key, len(data), "f")
    for d in (cache_dir, f"{cache_dir}/blobs", f"{cache_dir}/tmp", f"{cache_dir}/blobs/{key[:2]}"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert stat.S_IMODE(os.stat(f"{cache_dir}/blobs/{key[:2]}/{key}").st_mode) == 0o600


def test_local_store_is_read_in_place(tmp_path, cache_dir: str) -> None:
    reg = Registry.open(str(tmp_path / "store"), create=True)
    data = randbytes(2 * MiB)
    key = put_blob(reg, data)
    cache = ChunkCache(reg, cache_dir, MiB)
    for _ in range(2):
        assert cache.read_chunk(key, len(data), "f") == data
    s = cache.stats()
    assert (s["fetches"], s["bytes_fetched"], s["hits"], s["cache_bytes"]) == (2, 2 * len(data), 0, 0)
    assert not os.path.exists(cache_dir)  # no second copy, not even the directory
    with open(reg.store.local_path(blob_key(key)), "r+b") as f:
        f.write(b"corrupt")
    with pytest.raises(DigestMismatchError, match="data/x.bin"):
        cache.read_chunk(key, len(data), "data/x.bin")
    with pytest.raises(ObjectNotFound, match="gone.bin"):
        cache.read_chunk("f" * 32, 1, "gone.bin")


def test_parse_size() -> None:
    assert parse_size("10G") == 10 << 30
    assert parse_size("512") == 512
    assert parse_size("1.5k") == 1536
    assert parse_size("2MiB") == 2 << 20
    assert parse_size("1T") == 1 << 40
    for bad in ("", "ten", "-1G", "10X", "1G2"):
        with pytest.raises(ValueError, match="invalid size"):
            parse_size(bad)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert default_cache_dir() == "/somewhere/cache/artifactfs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == os.path.expanduser("~/.cache/artifactfs")


def test_a_cache_disk_that_fills_below_the_cap_lowers_the_cap(s3_reg: Registry, tmp_path, caplog) -> None:
    """A cache dir on a disk smaller than --cache-size: reads stay right, the cap
    falls to what fits (one warning, not one per blob), and the oldest blobs make
    room for new ones instead of nothing being cached any more."""
    with tmpfs(tmp_path / "small", "6m") as disk:
        blobs = [randbytes(MiB) for _ in range(12)]
        keys = [put_blob(s3_reg, b) for b in blobs]
        s3_reg.store.sync()
        cache = ChunkCache(s3_reg, str(disk), 10 << 30)
        with caplog.at_level("WARNING", logger="artifactfs"):
            for key, data in zip(keys, blobs):
                assert cache.read_chunk(key, MiB, "f") == data
        assert cache.max_bytes < 6 * MiB
        held = cached_files(str(disk))
        assert keys[-1] in held and keys[0] not in held, "the newest stay, the oldest made room"
        assert sum(held.values()) <= cache.max_bytes
        assert sum("is full" in r.getMessage() for r in caplog.records) == 1
        assert not [r for r in caplog.records if "cannot cache" in r.getMessage()]


def test_a_symlink_in_place_of_a_blob_is_not_followed(s3_reg: Registry, cache_dir: str, tmp_path) -> None:
    """A symlink where a cached blob should be is neither read nor touched through
    (even when its target holds the right bytes): it is replaced by a fetched copy."""
    data = randbytes(MiB)
    key = put_blob(s3_reg, data)
    s3_reg.store.sync()
    cache = ChunkCache(s3_reg, cache_dir, 100 * MiB)
    outside = tmp_path / "outside"
    outside.write_bytes(data)
    os.utime(outside, ns=(1, 1))
    link = os.path.join(cache_dir, "blobs", key[:2], key)
    os.makedirs(os.path.dirname(link))
    os.symlink(outside, link)
    assert cache.read_chunk(key, MiB, "f") == data
    assert cache.stats()["fetches"] == 1
    assert stat.S_ISREG(os.lstat(link).st_mode)
    assert os.stat(outside).st_mtime_ns == 1
