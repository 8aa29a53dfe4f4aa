"""S3Store against a real moto server process: the whole ObjectStore interface, its
atomic operations under races, and the registry and Artifact API on an s3:// URL."""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import xxhash
from conftest import randbytes
from s3server import MotoServer, s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs.api.artifact import Artifact
from artifactfs.api.public import Api
from artifactfs.errors import ObjectNotFound, PreconditionFailed, StoreError
from artifactfs.registry.manifest import FileEntry, apply_changes, artifact_digest, b64_digest, walk
from artifactfs.registry.versions import Registry
from artifactfs.store import open_store
from artifactfs.store.s3 import S3Store


@pytest.fixture
def store(s3_url: str) -> S3Store:
    s = open_store(s3_url)
    assert isinstance(s, S3Store)
    return s


def test_get_put_exists_size_delete(store: S3Store) -> None:
    assert not store.exists("a/b")
    store.put("a/b", b"hello")
    assert store.exists("a/b") and store.get("a/b") == b"hello" and store.size("a/b") == 5
    store.put("a/b", b"replaced")
    assert store.get("a/b") == b"replaced"
    store.delete("a/b")
    store.delete("a/b")  # absent is fine
    assert not store.exists("a/b")
    store.sync()
    assert store.local_path("a/b") is None


def test_missing_object_is_object_not_found(store: S3Store) -> None:
    for call in (lambda: store.get("no/such"), lambda: store.size("no/such"),
                 lambda: store.get_range("no/such", 0, 4), lambda: store.get_versioned("no/such")):
        with pytest.raises(ObjectNotFound, match=f"object no/such not found in {store.url}"):
            call()


def test_get_range(store: S3Store) -> None:
    data = randbytes(10_000)
    store.put("blob", data)
    assert store.get_range("blob", 0, 4096) == data[:4096]
    assert store.get_range("blob", 5000, 100) == data[5000:5100]
    assert store.get_range("blob", 9990, 100) == data[9990:]  # shorter at the end
    assert store.get_range("blob", 10_000, 10) == b""  # at the end, like pread
    assert store.get_range("blob", 20_000, 10) == b""
    assert store.get_range("blob", 10, 0) == b""


def test_get_versioned_etag_changes(store: S3Store) -> None:
    store.put("k", b"one")
    d1, e1 = store.get_versioned("k")
    store.put("k", b"two")
    d2, e2 = store.get_versioned("k")
    assert (d1, d2) == (b"one", b"two") and e1 != e2


def test_list_recursive_and_one_level(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    url = s3_server.new_bucket_url("some/prefix")
    store = open_store(url)
    assert store.url == url
    for k in ("x/1", "x/2", "x/y/3", "x/z/4", "xa", "top"):
        store.put(k, b"-")
    bucket = url[len("s3://"):].split("/")[0]
    s3_server.client().put_object(Bucket=bucket, Key="outside/prefix", Body=b"-")  # not ours
    assert sorted(store.list("")) == ["top", "x/1", "x/2", "x/y/3", "x/z/4", "xa"]
    assert sorted(store.list("x/")) == ["x/1", "x/2", "x/y/3", "x/z/4"]
    assert sorted(store.list("x/", recursive=False)) == ["x/1", "x/2", "x/y/", "x/z/"]
    assert sorted(store.list("", recursive=False)) == ["top", "x/", "xa"]
    assert sorted(store.list("x", recursive=False)) == ["x/", "xa"]
    assert list(store.list("nothing/")) == []


def test_list_follows_pages(store: S3Store) -> None:
    keys = [f"many/{i:03d}" for i in range(40)] + [f"many/d{i:02d}/x" for i in range(10)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b""), keys))
    store.page_size = 7
    assert sorted(store.list("many/")) == sorted(keys)
    assert sorted(store.list("many/", recursive=False)) == keys[:40] + [f"many/d{i:02d}/" for i in range(10)]


def test_put_if_absent(store: S3Store) -> None:
    assert store.put_if_absent("once", b"first") is True
    assert store.put_if_absent("once", b"second") is False
    assert store.get("once") == b"first"


def test_put_if_absent_race(store: S3Store) -> None:
    n = 8
    barrier = threading.Barrier(n)

    def attempt(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("raced", f"writer {i}".encode())
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(attempt, range(n)))
    assert results.count(True) == 1
    assert store.get("raced") == f"writer {results.index(True)}".encode()


def test_compare_and_swap(store: S3Store) -> None:
    e1 = store.compare_and_swap("c", b"v1", None)  # create only if absent
    with pytest.raises(PreconditionFailed):
        store.compare_and_swap("c", b"other", None)
    e2 = store.compare_and_swap("c", b"v2", e1)
    assert store.get_versioned("c") == (b"v2", e2)
    with pytest.raises(PreconditionFailed):
        store.compare_and_swap("c", b"v3", e1)  # stale etag
    store.delete("c")
    with pytest.raises(PreconditionFailed):
        store.compare_and_swap("c", b"v3", e2)  # deleted meanwhile
    assert not store.exists("c")


def test_compare_and_swap_race_one_winner(store: S3Store) -> None:
    etag = store.compare_and_swap("r", b"0", None)
    barrier = threading.Barrier(2)

    def attempt(i: int) -> bool:
        barrier.wait()
        try:
            store.compare_and_swap("r", f"writer {i}".encode(), etag)
            return True
        except PreconditionFailed:
            return False
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, range(2)))
    assert results.count(True) == 1
    assert store.get("r") == f"writer {results.index(True)}".encode()


def test_compare_and_swap_counter_loses_no_update(store: S3Store) -> None:
    per_thread = 25

    def bump() -> None:
        for _ in range(per_thread):
            while True:
                try:
                    data, etag = store.get_versioned("counter")
                except ObjectNotFound:
                    data, etag = b"0", None
                try:
                    store.compare_and_swap("counter", str(int(data) + 1).encode(), etag)
                    break
                except PreconditionFailed:
                    time.sleep(0.001)
    threads = [threading.Thread(target=bump) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(store.get("counter")) == 2 * per_thread


def test_parallel_fetches_use_the_connection_pool(store: S3Store, caplog: pytest.LogCaptureFixture) -> None:
    blob = randbytes(256 * 1024)
    store.put("p", blob)
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        with ThreadPoolExecutor(16) as pool:
            assert all(d == blob for d in pool.map(lambda _: store.get("p"), range(64)))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_missing_bucket_is_one_clear_line(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(StoreError, match="S3 bucket 'no-such-bucket' does not exist") as e:
        Registry.open("s3://no-such-bucket/x")
    assert "\n" not in str(e.value)


def test_an_endpoint_that_is_no_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTFS_S3_ENDPOINT", "user:secret@notaurl")
    with pytest.raises(StoreError) as e:
        Registry.open("s3://bucket")
    assert str(e.value) == "cannot use S3 endpoint 'notaurl': not an http:// or https:// URL"


def test_unreachable_endpoint_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ARTIFACTFS_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach S3 endpoint http://127.0.0.1:{port}") as e:
        Registry.open("s3://bucket")
    assert "\n" not in str(e.value)
    assert time.monotonic() - t0 < 30


def test_credentials_never_in_urls_or_messages(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match="no credentials"):
        open_store("s3://AKIDSECRET:hunter2@bucket/x")
    secret = "S3CR3T-value-never-shown"
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("ARTIFACTFS_S3_ENDPOINT", s3_server.endpoint.replace("http://", "http://user:pw@"))
    store = open_store(s3_server.new_bucket_url())
    errors = []
    for call in (lambda: store.get("missing"), lambda: open_store("s3://no-such-bucket").get("k")):
        try:
            call()
        except StoreError as e:
            errors.append(str(e))
    assert len(errors) == 2
    assert not [m for m in errors if secret in m or "pw" in m]


def test_bad_s3_urls() -> None:
    for bad in ("s3://", "s3:///path", "s3://b/x?versionId=3"):
        with pytest.raises(StoreError):
            open_store(bad)


# -- the registry and the Artifact API on S3 ------------------------------------------

def commit_files(reg: Registry, name: str, files: dict[str, bytes], **kw) -> tuple[int, bool]:
    changes = {}
    for path, data in files.items():
        key = xxhash.xxh3_128_hexdigest(data)
        reg.put_blob(key, data)
        changes[path] = FileEntry(b64_digest(xxhash.xxh3_128_digest(data)), len(data), (key,))
    root = apply_changes(reg, None, changes)
    info, created = reg.commit("proj", name, "dataset", root, artifact_digest(walk(reg, root.tree)), **kw)
    return info.version, created


def test_registry_needs_a_store_marker(s3_url: str) -> None:
    with pytest.raises(StoreError, match="no artifactfs store at"):
        Registry.open(s3_url)
    Registry.open(s3_url, create=True)
    assert Registry.open(s3_url).entity


def test_registry_commit_versions_aliases(s3_url: str) -> None:
    reg = Registry.open(s3_url, create=True)
    assert commit_files(reg, "ds", {"a.txt": b"one"}, aliases=["best"]) == (0, True)
    assert commit_files(reg, "ds", {"a.txt": b"one"}) == (0, False)  # unchanged: no new version
    assert commit_files(reg, "ds", {"a.txt": b"two", "d/b.txt": b"bee"}) == (1, True)
    assert reg.versions("proj", "ds") == [0, 1]
    assert reg.aliases("proj", "ds") == {"best": 0, "latest": 1}
    reg.set_alias("proj", "ds", "best", 1)
    reg.set_alias("proj", "ds", "old", 0)
    assert reg.aliases("proj", "ds") == {"best": 1, "old": 0, "latest": 1}
    reg.set_alias("proj", "ds", "old", None)
    info = reg.get("proj", "ds", "best")
    assert info.version == 1 and info.aliases == ["best", "latest"]
    assert reg.get_blob(reg.lookup(info.root, "d/b.txt").chunks[0]) == b"bee"
    assert [c.name for c in reg.collections("proj")] == ["ds"] and reg.projects() == ["proj"]


def test_registry_concurrent_commits_get_distinct_versions(s3_url: str) -> None:
    Registry.open(s3_url, create=True)
    per_thread = 6

    def writer(w: int) -> list[int]:
        reg = Registry.open(s3_url)  # own registry, as another process would have
        return [commit_files(reg, "race", {"f": f"{w}-{i}".encode()})[0] for i in range(per_thread)]
    with ThreadPoolExecutor(2) as pool:
        got = [v for vs in pool.map(writer, range(2)) for v in vs]
    assert sorted(got) == list(range(2 * per_thread))
    reg = Registry.open(s3_url)
    assert reg.versions("proj", "race") == list(range(2 * per_thread))
    assert reg.aliases("proj", "race")["latest"] == 2 * per_thread - 1


def test_artifact_save_and_download_through_s3_url(s3_url: str, tmp_path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {"small.txt": b"hello s3\n", "sub/big.bin": randbytes(9 * 1024 * 1024 + 17)}  # 2 chunks
    for path, data in files.items():
        (src / path).write_bytes(data)
    art = Artifact("s3data", "dataset", metadata={"k": 1}, store=s3_url)
    art.add_dir(str(src))
    art.aliases.append("best")
    art.save(project="proj")
    assert art.version == "v0" and art.url.startswith(s3_url + "/")
    got = Api(store=s3_url, project="proj").artifact("s3data:best")
    assert got.digest == art.digest and got.metadata == {"k": 1}
    root = got.download(str(tmp_path / "out"))
    for path, data in files.items():
        assert open(os.path.join(root, path), "rb").read() == data
    got.verify(root)


def test_present_asks_about_many_keys_at_once(store: S3Store) -> None:
    for i in range(0, 20, 2):
        store.put(f"p/{i}", b"x")
    store.sync()
    assert store.present([f"p/{i}" for i in range(20)]) == {f"p/{i}" for i in range(0, 20, 2)}
    assert store.present(["p/0", "p/1"]) == {"p/0"}


def test_puts_of_one_key_land_in_the_order_made(store: S3Store) -> None:
    """put() uploads in the background; a later put of the same key must still win."""
    for i in range(20):
        store.put("k", b"%d" % i)
    store.sync()
    assert store.get("k") == b"19"
    for i in range(20):
        store.put("k", b"x" * (i + 1))
    assert store.get("k") == b"x" * 20  # read-your-writes, before any sync
