"""Small files packed into shared objects on S3 (docs/store-format.md 5.6), over a
real moto server: few requests for many files, every byte still verified, the
same digests as a local store, gc keeping a pack while any live file is in it,
and the mount and its drafts reading and committing packed files."""
from __future__ import annotations

import gc as pygc
import os

import pytest
from conftest import randbytes
from core_util import RecordingStore, check_version_complete, corrupt, write_files
from mountutil import cli, mounted
from s3server import s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs import Api, Artifact, DigestMismatchError
from artifactfs.api.gc import collect
from artifactfs.chunks.cache import ChunkCache
from artifactfs.errors import CorruptStoreError
from artifactfs.registry import packs
from artifactfs.registry.manifest import FileEntry, decode_tree, walk
from artifactfs.registry.versions import Registry

SMALL = {f"d{i % 4}/f{i:03}.txt": f"file {i} ".encode() * (i % 50 + 1) for i in range(300)}
BIG = randbytes(100_000)  # over pack_below (64 KiB): a blob of its own


def put(store: str, src: str, files: dict, name: str = "ds") -> Artifact:
    art = Artifact(name, "dataset", store=store)
    art.add_dir(write_files(src, files))
    return art.save("proj")


def entries(reg: Registry, version: int, name: str = "ds") -> dict[str, FileEntry]:
    return dict(walk(reg, reg.version("proj", name, version).root))  # type: ignore[arg-type]


def test_many_small_files_go_into_one_pack_with_the_local_digest(s3_url, tmp_path):
    art = put(s3_url, str(tmp_path / "src"), {**SMALL, "big.bin": BIG})
    reg = Registry.open(s3_url)
    store = reg.store
    assert len(list(store.list("packs/"))) == 1  # 300 files, ~40 KB: one object, not 300
    assert len(list(store.list("blobs/"))) == 1  # big.bin
    got = entries(reg, 0)
    assert all(got[p].pack is not None for p in SMALL) and got["big.bin"].pack is None
    assert check_version_complete(reg, "proj", "ds", 0) == len(SMALL) + 1
    local = put(str(tmp_path / "local"), str(tmp_path / "src"), {})  # the same folder, a local store
    assert local.digest == art.digest  # W&B digest: where bytes are stored is no part of it
    out = tmp_path / "out"
    Api(s3_url, project="proj").artifact("ds:v0").download(str(out))
    for path, content in {**SMALL, "big.bin": BIG}.items():
        assert (out / path).read_bytes() == (content if isinstance(content, bytes) else content.encode())
    again = put(s3_url, str(tmp_path / "src"), {})  # the same files once more: packed anew, same content
    assert again.version == "v0"


def test_a_corrupted_pack_is_never_served(s3_url, tmp_path):
    put(s3_url, str(tmp_path / "src"), SMALL)
    reg = Registry.open(s3_url)
    entry = entries(reg, 0)["d1/f001.txt"]
    corrupt(reg.store, entry, b"X" * entry.size)
    with pytest.raises(DigestMismatchError, match="d1/f001.txt"):
        Api(s3_url, project="proj").artifact("ds:v0").download(str(tmp_path / "out"))


def test_gc_keeps_a_pack_while_any_live_version_uses_a_file_in_it(s3_url, tmp_path):
    first = put(s3_url, str(tmp_path / "a"), SMALL)
    draft = Api(s3_url, project="proj").artifact("ds:v0").new_draft()
    draft.remove("d0/f000.txt")
    second = draft.save()  # v1 keeps the other 299 files where v0 put them
    reg = Registry.open(s3_url)
    shared = {e.pack.pack for e in entries(reg, 1).values()}
    assert len(shared) == 1 and shared == {e.pack.pack for e in entries(reg, 0).values()}
    first.delete()
    report = collect(reg, grace=0, keep_deleted=0)
    assert report.packs == 0 and report.blobs == 0
    assert check_version_complete(Registry.open(s3_url), "proj", "ds", 1) == len(SMALL) - 1
    second.delete()
    assert collect(reg, grace=0, keep_deleted=0).packs == 1
    assert list(reg.store.list("packs/")) == []


def test_the_mount_reads_packed_files_and_its_drafts_commit_them(s3_url, tmp_path):
    put(s3_url, str(tmp_path / "src"), SMALL)
    with mounted(s3_url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        for path in ("d0/f000.txt", "d3/f299.txt", "d2/f150.txt"):
            with open(m.p("ds", "ds:v0", path), "rb") as f:
                assert f.read() == SMALL[path]
        with open(m.p("ds", "draft", "new.txt"), "wb") as f:
            f.write(b"new in the draft")
        os.chmod(m.p("ds", "draft", "d1", "f001.txt"), 0o755)  # a base file changed, not its bytes
        done = cli("sync", m.p("ds", "draft"), env=m.env, timeout=120)
        assert done.returncode == 0, done.stderr
        for where in (m.p("ds", "draft", "new.txt"), m.p("ds", "ds:v1", "new.txt")):  # now from its pack
            with open(where, "rb") as f:
                assert f.read() == b"new in the draft"
    reg = Registry.open(s3_url)
    got = entries(reg, 1)
    assert got["new.txt"].pack is not None and got["d1/f001.txt"].executable
    assert got["d1/f001.txt"].pack == entries(reg, 0)["d1/f001.txt"].pack
    assert check_version_complete(reg, "proj", "ds", 1) == len(SMALL) + 1


def test_the_mount_gives_eio_for_a_corrupted_packed_file(s3_url, tmp_path):
    put(s3_url, str(tmp_path / "src"), SMALL)
    reg = Registry.open(s3_url)
    entry = entries(reg, 0)["d2/f002.txt"]
    corrupt(reg.store, entry, b"Y" * entry.size)
    with mounted(s3_url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        with pytest.raises(OSError) as e:
            with open(m.p("ds", "ds:v0", "d2", "f002.txt"), "rb") as f:
                f.read()
        assert e.value.errno == 5  # EIO
        with open(m.p("ds", "ds:v0", "d2", "f006.txt"), "rb") as f:
            assert f.read() == SMALL["d2/f006.txt"]


@pytest.mark.parametrize("member", [{"at": -1}, {"at": "0"}, {"at": None}, {"pack": "XY" * 16},
                                    {"ref": "https://example.com/x"}, {"size": 9 * 1024 * 1024}])
def test_a_tree_with_a_bad_pack_location_is_refused(member):
    entry = {"type": "file", "digest": "9NBJfPk5TKqzTRo6sr7OcA==", "size": 3, "pack": "ab" * 16, "at": 0, **member}
    tree = b'{"entries":{"a":' + __import__("json").dumps(entry).encode() + b'},"format":"artifactfs-tree-v1"}'
    with pytest.raises(CorruptStoreError):
        decode_tree(tree)


def test_the_location_index_holds_only_entries_in_use():
    span = packs.PackSpan("cd" * 16, 7)
    key = "ef" * 16
    entry = FileEntry("AAAAAAAAAAAAAAAAAAAAAA==", 5, (key,), pack=span)
    assert packs.locate(key) == [span]
    del entry, span
    pygc.collect()
    assert packs.locate(key) == []


def test_the_chunk_cache_fetches_a_pack_once_for_all_its_files(s3_url, tmp_path):
    put(s3_url, str(tmp_path / "src"), SMALL)
    rec = RecordingStore(s3_url)
    reg = Registry(rec)
    files = entries(reg, 0)
    cache = ChunkCache(reg, str(tmp_path / "cache"), 1 << 30)
    for path, e in files.items():
        assert cache.read_chunk(e.chunks[0], e.size, path) == SMALL[path]
    assert [op for op, k in rec.ops if k.startswith("packs/")] == ["get"]  # one GET for 300 files
    bad = files["d3/f003.txt"]
    corrupt(rec.inner, bad, b"Z" * bad.size)
    fresh = ChunkCache(reg, str(tmp_path / "cache2"), 1 << 30)
    with pytest.raises(DigestMismatchError, match="d3/f003.txt"):
        fresh.read_chunk(bad.chunks[0], bad.size, "d3/f003.txt")
    corrupt(rec.inner, bad, SMALL["d3/f003.txt"])  # repaired: the bad copy was not kept
    assert fresh.read_chunk(bad.chunks[0], bad.size, "d3/f003.txt") == SMALL["d3/f003.txt"]
    cache.close()
    fresh.close()


class PrefetchRecorder(RecordingStore):
    def prefetch(self, keys: list[str]) -> None:
        self.ops += [("prefetch", k) for k in keys]
        self.inner.prefetch(keys)


def test_the_chunk_cache_prefetches_only_blobs_it_must_fetch(s3_url, tmp_path):
    more = {"b1.bin": randbytes(70_000), "b2.bin": randbytes(80_000)}  # blobs: 64 KiB and over
    put(s3_url, str(tmp_path / "src"), {**SMALL, **more})
    rec = PrefetchRecorder(s3_url)
    reg = Registry(rec)
    files = entries(reg, 0)
    cache = ChunkCache(reg, str(tmp_path / "cache"), 1 << 30)
    b1, b2, packed = files["b1.bin"], files["b2.bin"], files["d0/f000.txt"]
    assert cache.read_chunk(b1.chunks[0], b1.size, "b1.bin") == more["b1.bin"]  # now on disk here
    cache.prefetch([b1.chunks[0], b2.chunks[0], packed.chunks[0]])
    assert [k for op, k in rec.ops if op == "prefetch"] == [b2.object_keys()[0]]
    assert cache.read_chunk(b2.chunks[0], b2.size, "b2.bin") == more["b2.bin"]
    cache.close()
