"""References (W&B's add_reference): file://, http(s):// and s3:// sources are
recorded, not uploaded; download() fetches and checks them; the mount reads them
lazily with ranged requests; a changed or vanished source is an error (EIO
through the mount, one log line), never different bytes.

Sources are real: files on disk, an HTTP server on 127.0.0.1 (tests/httpfiles.py)
and objects on the test run's moto server."""
from __future__ import annotations

import errno
import os

import pytest
import xxhash
from conftest import randbytes
from httpfiles import HttpFiles, etag_of
from mountutil import cli, mounted
from s3server import MotoServer, s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs import Api, Artifact, ArtifactfsError
from artifactfs.errors import UsageError
from artifactfs.chunks.references import ReferenceChanged, ReferenceGone, ReferenceUnreadable
from artifactfs.registry.manifest import CHUNK_SIZE, b64_digest
from artifactfs.registry.versions import Registry

P = "proj"


def w_digest(data: bytes) -> str:
    return b64_digest(xxhash.xxh3_128_digest(data))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def errno_of(fn) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


@pytest.fixture
def tree(tmp_path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n", "sub/b.bin": randbytes(70_000), "sub/deep/c.txt": b"see\n"}
    for rel, data in files.items():
        os.makedirs(os.path.dirname(tmp_path / "src" / rel), exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    return files


def test_file_tree_is_recorded_not_uploaded_and_downloaded_checked(env, tmp_path, tree):
    src = tmp_path / "src"
    art = Artifact("refs", "dataset")
    added = art.add_reference(f"file://{src}", name="data")
    assert sorted(e.path for e in added) == sorted(f"data/{p}" for p in tree)
    art.add_reference(f"file://{src}/a.txt")                    # one file: named by its basename
    art.save(P)
    got = Api().artifact("refs:latest")
    for path, data in tree.items():
        e = got.get_entry(f"data/{path}")
        assert (e.digest, e.size, e.ref) == (w_digest(data), len(data), f"file://{src}/{path}")
    assert got.get_entry("a.txt").ref == f"file://{src}/a.txt"
    assert not list(Registry.open(env).store.list("blobs/"))   # nothing uploaded
    out = got.download(str(tmp_path / "out"))
    for path, data in tree.items():
        assert read(os.path.join(out, "data", path)) == data
    # a source changed after logging is refused; a vanished one is skipped only when allowed
    (src / "sub" / "deep" / "c.txt").write_bytes(b"SEE\n")
    with pytest.raises(ReferenceChanged, match="c.txt changed since it was logged"):
        got.download(str(tmp_path / "out2"))
    assert not os.path.exists(tmp_path / "out2" / "data" / "sub" / "deep" / "c.txt")
    (src / "sub" / "deep" / "c.txt").unlink()
    with pytest.raises(ReferenceGone):
        got.download(str(tmp_path / "out3"))
    out4 = got.download(str(tmp_path / "out4"), allow_missing_references=True)
    assert read(os.path.join(out4, "data", "sub", "b.bin")) == tree["sub/b.bin"]
    assert not os.path.exists(os.path.join(out4, "data", "sub", "deep", "c.txt"))


def test_missing_sources_and_limits(env, tmp_path, tree):
    art = Artifact("refs", "dataset")
    with pytest.raises(ReferenceGone):
        art.add_reference(f"file://{tmp_path}/nope")
    with pytest.raises(ArtifactfsError, match="more than max_objects=2"):
        art.add_reference(f"file://{tmp_path}/src", max_objects=2)
    uri_only = art.add_reference(f"file://{tmp_path}/src", name="lazy", checksum=False)
    other = art.add_reference("gs://bucket/some/object.bin")
    for no_scheme in ("notaurl", f"{tmp_path}/src", "relative/path.bin"):
        with pytest.raises(UsageError, match="is not a URI"):
            art.add_reference(no_scheme)
    assert [e.path for e in uri_only] == ["lazy"] and [e.path for e in other] == ["object.bin"]
    assert uri_only[0].digest == w_digest(f"file://{tmp_path}/src".encode())
    assert other[0].digest == w_digest(b"gs://bucket/some/object.bin")
    assert other[0].extra == {"size_unknown": True}
    art.save(P)
    with pytest.raises(ReferenceUnreadable, match="records only its URI"):
        Api().artifact("refs:latest").download(str(tmp_path / "out"))


def test_http_reference_etag_and_lazy_ranged_reads_through_the_mount(env, tmp_path):
    big = randbytes(2 * CHUNK_SIZE + 1000)
    with HttpFiles({"/d/big.bin": big, "/d/small.txt": b"small\n", "/d/moving.txt": b"before\n"}) as srv:
        art = Artifact("web", "dataset")
        for p in ("big.bin", "small.txt", "moving.txt"):
            art.add_reference(srv.url(f"/d/{p}"))
        art.save(P)
        got = Api().artifact("web:latest")
        e = got.get_entry("big.bin")
        assert (e.digest, e.size, e.extra) == (etag_of(big).strip('"'), len(big), {"etag": etag_of(big)})
        srv.files["/d/moving.txt"] = b"after!!\n"                 # same size, new bytes
        with mounted(env, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
            srv.ranges.clear()
            with open(m.p("web", "web:v0", "big.bin"), "rb") as f:
                f.seek(CHUNK_SIZE + 10)
                assert f.read(100) == big[CHUNK_SIZE + 10:CHUNK_SIZE + 110]
            assert srv.ranges and all(r.startswith(f"bytes={CHUNK_SIZE}-") for r in srv.ranges)
            assert read(m.p("web", "web:v0", "big.bin")) == big
            assert read(m.p("web", "web:v0", "small.txt")) == b"small\n"
            assert errno_of(lambda: read(m.p("web", "web:v0", "moving.txt"))) == errno.EIO
            assert m.log.count("moving.txt changed since it was logged") >= 1
            del srv.files["/d/small.txt"]
            os.system("sync; echo 3 > /proc/sys/vm/drop_caches")  # forget small.txt's cached pages
            assert errno_of(lambda: read(m.p("web", "web:v0", "small.txt"))) == errno.EIO
            assert "small.txt no longer exists" in m.log
        srv.files["/d/moving.txt"] = b"before\n"                  # back as logged
        out = got.download(str(tmp_path / "out"), allow_missing_references=True)
        assert read(os.path.join(out, "big.bin")) == big and not os.path.exists(os.path.join(out, "small.txt"))
        assert read(os.path.join(out, "moving.txt")) == b"before\n"
        srv.files["/d/moving.txt"] = b"after!!\n"
        with pytest.raises(ReferenceChanged):  # changed is not missing: never skipped
            got.download(str(tmp_path / "out2"))


def test_s3_prefix_with_versions_and_lazy_reads(env, tmp_path, s3_server: MotoServer, monkeypatch):
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    bucket = s3_server.new_bucket_url()[len("s3://"):]
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    objects = {"data/x.bin": randbytes(CHUNK_SIZE + 5), "data/y/z.txt": b"zed\n", "other/no.txt": b"no"}
    for k, v in objects.items():
        client.put_object(Bucket=bucket, Key=k, Body=v)
    art = Artifact("s3refs", "dataset")
    added = art.add_reference(f"s3://{bucket}/data", name="d")
    assert sorted(e.path for e in added) == ["d/x.bin", "d/y/z.txt"]
    assert all(e.extra["versionID"] and e.extra["etag"] for e in added)
    with pytest.raises(ArtifactfsError, match="more than max_objects=1"):
        Artifact("s3refs", "dataset").add_reference(f"s3://{bucket}/data/", max_objects=1)
    single = Artifact("s3refs", "dataset").add_reference(f"s3://{bucket}/data/y/z.txt")
    assert [(e.path, e.size) for e in single] == [("z.txt", 4)]
    art.save(P)
    got = Api().artifact("s3refs:latest")
    out = got.download(str(tmp_path / "out"))
    assert read(os.path.join(out, "d", "x.bin")) == objects["data/x.bin"]
    client.put_object(Bucket=bucket, Key="data/y/z.txt", Body=b"ZED\n")   # a new version of the key
    with mounted(env, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        with open(m.p("s3refs", "s3refs:v0", "d", "x.bin"), "rb") as f:
            f.seek(CHUNK_SIZE)
            assert f.read() == objects["data/x.bin"][CHUNK_SIZE:]
        # the recorded version id still names the old bytes: they are what is read
        assert read(m.p("s3refs", "s3refs:v0", "d", "y", "z.txt")) == b"zed\n"
    unversioned = s3_server.new_bucket_url()[len("s3://"):]
    client.put_object(Bucket=unversioned, Key="k.txt", Body=b"one\n")
    art2 = Artifact("plain", "dataset")
    assert "versionID" not in art2.add_reference(f"s3://{unversioned}/k.txt")[0].extra
    art2.save(P)
    client.put_object(Bucket=unversioned, Key="k.txt", Body=b"two\n")
    with mounted(env, tmp_path / "mnt2", "--cache-dir", str(tmp_path / "cache2")) as m:
        assert errno_of(lambda: read(m.p("plain", "plain:v0", "k.txt"))) == errno.EIO
        assert "k.txt changed since it was logged" in m.log


def test_put_with_references_and_a_folder(env, tmp_path, tree):
    with HttpFiles({"/w.bin": b"weights"}) as srv:
        cli("--store", env, "--project", P, "put", "--type", "model", "--reference", srv.url("/w.bin"),
            "--reference", f"file://{tmp_path}/src/a.txt", "only-refs", check=True)
        cli("--store", env, "--project", P, "put", str(tmp_path / "src"), "mixed", "--type", "model",
            "--reference", srv.url("/w.bin"), check=True)
        refs = Api(env, project=P).artifact("only-refs:latest")
        assert sorted(e.path for e in refs.files()) == ["a.txt", "w.bin"]
        assert refs.get_entry("w.bin").ref == srv.url("/w.bin")
        mixed = Api(env, project=P).artifact("mixed:latest")
        assert sorted(e.path for e in mixed.files()) == sorted([*tree, "w.bin"])
        assert mixed.get_entry("a.txt").ref is None
        done = cli("--store", env, "put", "--type", "model", "x", env=dict(os.environ))
        assert done.returncode == 2 and "--reference" in done.stderr
        done = cli("--store", env, "put", "--type", "model", "--reference", srv.url("/nope"), "x")
        assert done.returncode == 1 and done.stderr.startswith("Error: reference http") \
            and len(done.stderr.splitlines()) == 1
