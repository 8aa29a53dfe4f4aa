"""Entries of a shared store that the format cannot hold (written by another tool
or by hand): a collection named '..' or 'a b', bad aliases, a version record
spelled v007.json, aliases too long to be a file name.  Each is skipped with one
warning; everything valid keeps working in the CLI, the API and the mount, and gc
keeps (never deletes) what they name (docs/store-format.md 1.1)."""
from __future__ import annotations

import errno
import json
import os

import pytest
from core_util import write_files
from mountutil import cli, mount_factory, wait_for  # noqa: F401 (fixture)
from s3server import s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs import Api, Artifact
from artifactfs.api.gc import collect
from artifactfs.errors import CorruptStoreError, InvalidNameError
from artifactfs.registry.keys import tree_object_key
from artifactfs.registry.versions import Registry
from artifactfs.store import open_store

P = "proj"
C = f"projects/{P}/collections"


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "ARTIFACTFS_STORE": url, "ARTIFACTFS_PROJECT": P}


def put(url: str, name: str, src: str, files: dict) -> Artifact:
    art = Artifact(name, "dataset", store=url)
    art.add_dir(write_files(src, files))
    return art.save(P)


def add_strays(url: str) -> dict:
    """Stray keys beside the valid collection 'good' (v0, alias 'ok'); returns
    good:v0's record, which the strays copy."""
    store = open_store(url)
    record = json.loads(store.get(f"{C}/good/versions/v0.json"))
    info = json.dumps({"name": "x", "type": "dataset", "description": None, "created_at": "2026-01-01T00:00:00Z"})
    if url.startswith("s3://"):  # a local directory cannot hold a key with '..'; artifactfs refuses to write one
        import boto3
        client = boto3.client("s3", endpoint_url=os.environ["ARTIFACTFS_S3_ENDPOINT"], region_name="us-east-1")
        client.put_object(Bucket=url[len("s3://"):], Key=f"{C}/../collection.json", Body=info.encode())
        assert f"{C}/../" in store.list(f"{C}/", recursive=False)
    store.put(f"{C}/a b/collection.json", info.encode())
    store.put("projects/a b/collections/x/collection.json", info.encode())  # a project name nothing can hold
    store.put(f"{C}/good/versions/v007.json", json.dumps(record).encode())
    store.put(f"{C}/good/aliases.json",
              json.dumps({"ok": 0, "x/y": 0, "": 0, "../../../etc": 0, "v3": 0, "bad": "zero"}).encode())
    return record


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> str:
    url = str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3_url")
    put(url, "good", str(tmp_path / "src"), {"a.txt": "hello"})
    return url


def test_cli_and_api_skip_stray_entries_with_one_warning(store):
    add_strays(store)
    env = env_for(store)
    done = cli("ls", env=env)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["good"]
    assert [line for line in done.stderr.splitlines() if "'a b'" in line] != []
    assert len([line for line in done.stderr.splitlines() if "a b" in line]) == 1
    assert all(line.startswith("warning: ignoring ") for line in done.stderr.splitlines())
    done = cli("ls", "good", env=env)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["v0", "latest,ok"]]
    assert "v007.json" in done.stderr and "x/y" in done.stderr and "../../../etc" in done.stderr
    api = Api(store=store, project=P)
    assert [c.name for c in api.artifact_collections()] == ["good"]
    assert sorted(api.artifact("good:latest").aliases) == ["latest", "ok"]
    done = cli("gc", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    done = cli("--project", "other", "ls", env=env)
    assert done.returncode == 0 and "projects in this store: proj)" in done.stderr, done.stderr


def test_mount_skips_stray_entries_and_keeps_refreshing(store, mount_factory, tmp_path):  # noqa: F811
    m = mount_factory(store, "--refresh", "0.2")
    assert os.listdir(m.path) == ["good"]
    add_strays(store)
    put(store, "later", str(tmp_path / "src2"), {"b.txt": "x"})
    wait_for(lambda: sorted(os.listdir(m.path)) == ["good", "later"], 60, "the new collection to appear")
    wait_for(lambda: sorted(os.listdir(m.p("good"))) == ["draft", "good:latest", "good:ok", "good:v0"], 60,
             "the valid aliases to be listed")
    with open(m.p("good", "good:ok", "a.txt")) as f:
        assert f.read() == "hello"
    assert "refresh failed" not in m.log
    assert "ignoring" in m.log and m.log.count("v007.json") == 1


def test_a_version_record_that_does_not_parse_is_left_out_of_listings(store, mount_factory, tmp_path):  # noqa: F811
    put(store, "good", str(tmp_path / "src1"), {"a.txt": "v1"})
    put(store, "good", str(tmp_path / "src2"), {"a.txt": "v2"})
    store_ = open_store(store)
    record = json.loads(store_.get(f"{C}/good/versions/v1.json"))
    store_.put(f"{C}/good/versions/v1.json", json.dumps({**record, "root": "../../../etc"}).encode())
    store_.put(f"{C}/good/versions/v2.attrs.json", b"{not json")
    store_.put(f"{C}/deleted-list/collection.json", store_.get(f"{C}/good/collection.json"))
    store_.put(f"{C}/deleted-list/deleted.json", b"[")
    done = cli("ls", "good", env=env_for(store))
    assert done.returncode == 0, done.stderr
    assert [r.split()[0] for r in done.stdout.splitlines()[1:]] == ["v0", "v2"]
    assert "v1.json" in done.stderr and "v2.attrs.json" in done.stderr
    assert cli("ls", env=env_for(store)).returncode == 0
    api = Api(store=store, project=P)
    assert [a.version for a in api.artifact_versions("dataset", "good")] == ["v0", "v2"]
    m = mount_factory(store)
    assert sorted(os.listdir(m.p("good"))) == ["draft", "good:latest", "good:v0", "good:v2"]
    with open(m.p("good", "good:v2", "a.txt")) as f:
        assert f.read() == "v2"
    assert "v1.json" in m.log


def test_gc_keeps_what_unlisted_records_name_and_stops_at_an_unparsable_one(store, tmp_path):
    record = add_strays(store)
    reg = Registry.open(store)
    only_stray = put(store, "tmp", str(tmp_path / "src3"), {"c.txt": "only here"})
    root = reg.get(P, "tmp").root
    store_ = open_store(store)
    store_.put(f"{C}/a b/versions/v0.json", json.dumps({**record, "root": root}).encode())
    only_stray.delete()
    report = collect(Registry.open(store), grace=0, keep_deleted=0)
    assert store_.exists(tree_object_key(root)), "gc removed a tree a record it skips names"
    assert store_.exists(f"{C}/a b/versions/v0.json") and store_.exists(f"{C}/good/versions/v007.json")
    assert report.live_versions == 1
    store_.put(f"{C}/good/versions/v9.json", b"{not json")
    blobs = sorted(store_.list("blobs/")) + sorted(store_.list("packs/"))
    with pytest.raises(CorruptStoreError, match="v9.json"):
        collect(Registry.open(store), grace=0, keep_deleted=0)
    assert sorted(store_.list("blobs/")) + sorted(store_.list("packs/")) == blobs


def test_an_alias_too_long_for_a_file_name_is_refused_and_not_listed(store, mount_factory, tmp_path):  # noqa: F811
    name = "n" * 128
    put(store, name, str(tmp_path / "src4"), {"a": "1"})
    env = env_for(store)
    done = cli("alias", "add", f"{name}:v0", "a" * 127, env=env)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1 and "255 bytes" in done.stderr
    reg = Registry.open(store)
    with pytest.raises(InvalidNameError):
        reg.set_alias(P, name, "a" * 127, 0)
    reg.set_alias(P, name, "a" * 126, 0)  # 255 bytes: the longest that fits
    open_store(store).put(f"{C}/{name}/aliases.json", json.dumps({"a" * 126: 0, "b" * 127: 0}).encode())
    m = mount_factory(store)
    listed = sorted(os.listdir(m.p(name)))
    assert listed == sorted(["draft", f"{name}:latest", f"{name}:{'a' * 126}", f"{name}:v0"])
    assert "longer than 255 bytes" in m.log
    with pytest.raises(OSError) as e:  # an alias for the draft's next commit, through the mount
        os.setxattr(m.p(name, "draft"), "user.artifact.aliases", b"b" * 127)
    assert e.value.errno == errno.EINVAL
    os.setxattr(m.p(name, "draft"), "user.artifact.aliases", b"b" * 126)
