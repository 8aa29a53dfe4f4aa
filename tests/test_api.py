"""The W&B-shaped Python API: Artifact and Api (seed reference)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat

import pytest
from core_util import corrupt, write_files

from artifactfs import (
    Api,
    Artifact,
    ArtifactFinalizedError,
    ArtifactfsError,
    ArtifactNotLoggedError,
    DigestMismatchError,
    InvalidNameError,
    NotFoundError,
)
from artifactfs.errors import ObjectNotFound, UsageError
from artifactfs.registry.keys import blob_key
from artifactfs.registry.versions import Registry
from artifactfs.store import open_store

BOTH_STORES = True  # tests using store_url/env run on a local and an S3 store (tests/conftest.py)
FILES = {"a.txt": "alpha", "sub/b.txt": "beta", "sub/deep/c.bin": b"\x00\x01\x02", "empty": b""}


@pytest.fixture
def src(tmp_path) -> str:
    return write_files(str(tmp_path / "src"), FILES)


@pytest.fixture
def logged(env, src) -> Artifact:
    art = Artifact("data", "dataset", description="first", metadata={"k": 1})
    art.add_dir(src)
    return art.save()


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- construction and validation ------------------------------------------------
@pytest.mark.parametrize("name", ["bad name", "a/b", "", "..", "x:y"])
def test_invalid_artifact_names(name):
    with pytest.raises(InvalidNameError):
        Artifact(name, "dataset")


@pytest.mark.parametrize("type_", ["job", "wandb-run-table"])
def test_reserved_types(type_):
    with pytest.raises(ValueError, match="reserved"):
        Artifact("data", type_)


def test_metadata_limits():
    Artifact("d", "dataset", metadata={str(i): i for i in range(100)})
    with pytest.raises(ValueError, match="100"):
        Artifact("d", "dataset", metadata={str(i): i for i in range(101)})
    with pytest.raises(ValueError, match="JSON"):
        Artifact("d", "dataset", metadata={"x": object()})
    with pytest.raises(ValueError, match="JSON"):
        Artifact("d", "dataset", metadata={"x": float("nan")})
    art = Artifact("d", "dataset")
    with pytest.raises(ValueError):
        art.metadata = {str(i): i for i in range(101)}


def test_metadata_over_limit_is_refused_at_save(logged):
    logged.metadata.update({f"m{i}": i for i in range(100)})
    with pytest.raises(ValueError, match="100"):
        logged.save()
    assert Api().artifact("data").metadata == {"k": 1}


def test_ttl_must_be_a_positive_timedelta():
    art = Artifact("d", "dataset")
    with pytest.raises(ValueError):
        art.ttl = 5
    with pytest.raises(ValueError):
        art.ttl = dt.timedelta(0)
    art.ttl = dt.timedelta(days=1)
    assert art.ttl == dt.timedelta(days=1)


# -- drafts ---------------------------------------------------------------------
def test_draft_properties(env, src):
    art = Artifact("data", "dataset")
    art.add_dir(src)
    assert art.is_draft() and art.state == "PENDING" and art.name == "data"
    assert art.id is None and art.type == "dataset" and art.collection == "data"
    assert art.project == "proj"
    assert art.size == sum(len(v) for v in FILES.values()) and art.file_count == 4
    assert art.digest == art.manifest.digest()
    for prop in ("version", "commit_hash", "created_at", "url", "updated_at"):
        with pytest.raises(ArtifactNotLoggedError):
            getattr(art, prop)


@pytest.mark.parametrize("call", [
    lambda a, t: a.download(str(t)), lambda a, t: a.checkout(str(t)), lambda a, t: a.verify(str(t)),
    lambda a, t: a.file(str(t)), lambda a, t: a.files(), lambda a, t: a.get_entry("a.txt"),
    lambda a, t: a.new_draft(), lambda a, t: a.wait(),
])
def test_methods_that_need_a_logged_artifact(env, src, tmp_path, call):
    art = Artifact("data", "dataset")
    art.add_file(os.path.join(src, "a.txt"))
    with pytest.raises(ArtifactNotLoggedError):
        call(art, tmp_path / "out")


def test_add_file(env, src):
    art = Artifact("data", "dataset")
    entry = art.add_file(os.path.join(src, "a.txt"))
    assert (entry.path, entry.size) == ("a.txt", 5)
    assert entry.local_path == os.path.join(src, "a.txt")
    assert entry.extra == {"alg": "XXH128", "mtime_ns": os.stat(os.path.join(src, "a.txt")).st_mtime_ns}
    art.add_file(os.path.join(src, "sub/b.txt"), name="x/y.txt")
    assert art.get_added_local_path_name(os.path.join(src, "sub/b.txt")) == "x/y.txt"
    assert art.get_added_local_path_name(os.path.join(src, "empty")) is None
    with pytest.raises(ValueError, match="overwrite"):
        art.add_file(os.path.join(src, "sub/b.txt"), name="a.txt")
    art.add_file(os.path.join(src, "a.txt"))  # same content: fine
    art.add_file(os.path.join(src, "sub/b.txt"), name="a.txt", overwrite=True)
    assert art.manifest.entries["a.txt"].size == 4
    with pytest.raises(ValueError, match="policy"):
        art.add_file(os.path.join(src, "a.txt"), policy="sometimes")
    with pytest.raises(ArtifactfsError, match="not a file"):
        art.add_file(os.path.join(src, "missing"))
    with pytest.raises(InvalidNameError):
        art.add_file(os.path.join(src, "a.txt"), name="../escape")


def test_add_file_is_tmp_names_the_file_by_its_digest(env, src):
    """W&B: is_tmp renames the file deterministically (the part of its name
    before the first dot becomes 20 hex digits of its digest); it was ignored."""
    art = Artifact("data", "dataset")
    entry = art.add_file(os.path.join(src, "a.txt"), name="out/tmp.data.json", is_tmp=True)
    stem = base64.b64decode(entry.digest).hex()[:20]
    assert entry.path == f"out/{stem}.data.json" and list(art.manifest.entries) == [entry.path]
    again = art.add_file(os.path.join(src, "a.txt"), name="tmp", is_tmp=True)
    assert again.path == stem


def test_add_dir_merge_rule(env, src, tmp_path):
    art = Artifact("data", "dataset")
    art.add_dir(src, name="d")
    assert sorted(art.manifest.entries) == sorted(f"d/{p}" for p in FILES)
    with open(os.path.join(src, "a.txt"), "w") as f:
        f.write("changed")
    write_files(src, {"new.txt": "new"})
    with pytest.raises(ValueError):
        art.add_dir(src, name="d")
    art.add_dir(src, name="d", merge=True)
    assert art.manifest.entries["d/a.txt"].size == len("changed")
    assert "d/new.txt" in art.manifest.entries
    with pytest.raises(ArtifactfsError, match="not a directory"):
        art.add_dir(str(tmp_path / "nope"))


def test_new_file(env, tmp_path):
    art = Artifact("data", "dataset")
    with art.new_file("notes/readme.txt", encoding="utf-8") as f:
        f.write("héllo")
    with art.new_file("raw.bin", mode="xb") as f:
        f.write(b"\xff")
    assert art.manifest.entries["notes/readme.txt"].size == len("héllo".encode())
    with pytest.raises(ValueError):
        with art.new_file("raw.bin") as f:
            f.write("again")
    saved = art.save()
    out = saved.download(str(tmp_path / "out"))
    assert read(os.path.join(out, "notes/readme.txt")).decode() == "héllo"
    assert read(os.path.join(out, "raw.bin")) == b"\xff"


def test_remove(env, src):
    art = Artifact("data", "dataset")
    art.add_dir(src)
    art.remove("sub")
    assert sorted(art.manifest.entries) == ["a.txt", "empty"]
    entry = art.add_file(os.path.join(src, "sub/b.txt"))
    art.remove(entry)
    with pytest.raises(FileNotFoundError):
        art.remove("sub")
    art.save()
    assert [e.path for e in art.files()] == ["a.txt", "empty"]


def test_finalized_artifacts_refuse_changes(logged, src):
    for call in (lambda: logged.add_file(os.path.join(src, "a.txt"), "z"),
                 lambda: logged.add_dir(src, "z"), lambda: logged.remove("a.txt"),
                 lambda: logged.new_file("z").__enter__()):
        with pytest.raises(ArtifactFinalizedError):
            call()
    draft = Artifact("other", "dataset")
    draft.finalize()
    with pytest.raises(ArtifactFinalizedError):
        draft.add_file(os.path.join(src, "a.txt"))


# -- saving ---------------------------------------------------------------------
def test_logged_properties(logged, env):
    assert not logged.is_draft() and logged.state == "COMMITTED"
    assert logged.name == "data:v0" and logged.version == "v0"
    assert logged.project == "proj" and logged.entity == os.path.basename(env)  # the store's name
    assert logged.qualified_name == f"{logged.entity}/proj/data:v0"
    assert logged.aliases == ["latest"] and logged.description == "first"
    assert logged.metadata == {"k": 1} and logged.file_count == 4
    assert logged.size == sum(len(v) for v in FILES.values())
    assert len(logged.commit_hash) >= 8 and logged.id
    assert dt.datetime.fromisoformat(logged.created_at).tzinfo is not None
    assert logged.updated_at >= logged.created_at
    store = open_store(env)
    assert logged.url.startswith(store.url + "/")
    assert json.loads(store.get(logged.url[len(store.url) + 1:]))["digest"] == logged.digest
    assert logged.wait() is logged
    assert logged.digest == logged.manifest.digest()
    assert logged.json_encode() == {"_type": "artifactVersion", "_version": "v0", "id": logged.id,
                                    "version": logged.version, "sequenceName": logged.name.split(":")[0],
                                    "usedAs": None}


def test_saving_unchanged_content_is_a_noop(logged, src):
    again = Artifact("data", "dataset")
    again.add_dir(src)
    again.aliases.append("best")
    again.save()
    assert again.version == "v0" and again.id == logged.id and not again.created
    assert "best" in Api().artifact("data:v0").aliases
    assert [a.version for a in Api().artifact_versions("data")] == ["v0"]


def test_latest_follows_the_newest_version(logged, src, tmp_path):
    other = write_files(str(tmp_path / "other"), {"x": "x"})
    for i in range(3):
        write_files(other, {"x": f"x{i}"})
        art = Artifact("data", "dataset")
        art.add_dir(other)
        art.save()
        assert art.version == f"v{i + 1}" and art.created
        assert Api().artifact("data:latest").version == f"v{i + 1}"
    assert "latest" not in Api().artifact("data:v1").aliases


def test_saving_attributes_of_a_logged_version(logged):
    logged.aliases.append("best")
    logged.tags += ["t1", "t2"]
    logged.description = "second"
    logged.metadata["extra"] = [1, 2]
    logged.ttl = dt.timedelta(hours=2)
    logged.save()
    got = Api().artifact("data:best")
    assert got.version == "v0" and set(got.aliases) == {"best", "latest"}
    assert got.tags == ["t1", "t2"] and got.description == "second"
    assert got.metadata == {"k": 1, "extra": [1, 2]} and got.ttl == dt.timedelta(hours=2)
    got.aliases.remove("best")
    got.tags.remove("t1")
    got.ttl = None
    del got.metadata["k"]
    got.save()
    again = Api().artifact("data:v0")
    assert again.aliases == ["latest"] and again.tags == ["t2"]
    assert again.ttl is None and again.metadata == {"extra": [1, 2]}
    with pytest.raises(NotFoundError):
        Api().artifact("data:best")


@pytest.mark.parametrize("alias", ["v3", "bad alias"])
def test_invalid_alias_is_refused(logged, alias):
    logged.aliases.append(alias)
    with pytest.raises(InvalidNameError):
        logged.save()


def test_new_draft_is_incremental(logged, src, tmp_path):
    draft = logged.new_draft()
    assert draft.is_draft() and draft.manifest.entries.keys() == logged.manifest.entries.keys()
    draft.add_file(write_files(str(tmp_path / "n"), {"n.txt": "new"}) + "/n.txt", "sub/n.txt")
    draft.remove("a.txt")
    v1 = draft.save()
    assert v1.version == "v1" and v1.description == "first"
    assert sorted(e.path for e in v1.files()) == ["empty", "sub/b.txt", "sub/deep/c.bin", "sub/n.txt"]
    assert Api().registry.version("proj", "data", 1).base == 0
    assert sorted(e.path for e in Api().artifact("data:v0").files()) == sorted(FILES)


def test_save_to_an_explicit_project(env, src):
    art = Artifact("data", "dataset")
    art.add_dir(src)
    art.save(project="elsewhere")
    assert art.project == "elsewhere"
    assert Api().artifact("elsewhere/data").version == "v0"
    with pytest.raises(NotFoundError):
        Api().artifact("data")


def test_collection_type_is_fixed(logged, tmp_path):
    art = Artifact("data", "model")
    art.add_file(write_files(str(tmp_path / "m"), {"w": "w"}) + "/w")
    with pytest.raises(UsageError, match="type"):
        art.save()


# -- reading --------------------------------------------------------------------
def test_download_checkout_verify(logged, tmp_path):
    root = str(tmp_path / "out")
    write_files(root, {"mine.txt": "keep me"})
    assert logged.download(root) == root
    for rel, content in FILES.items():
        assert read(os.path.join(root, rel)) == (content.encode() if isinstance(content, str) else content)
    assert read(os.path.join(root, "mine.txt")) == b"keep me"  # download leaves other files alone
    with pytest.raises(ValueError, match="mine.txt"):
        logged.verify(root)
    logged.checkout(root)
    assert not os.path.exists(os.path.join(root, "mine.txt"))
    logged.verify(root)
    write_files(root, {"sub/b.txt": "tampered"})
    with pytest.raises(ValueError, match="sub/b.txt"):
        logged.verify(root)
    os.unlink(os.path.join(root, "a.txt"))
    with pytest.raises(ValueError, match="a.txt: missing"):
        logged.verify(root)


def test_download_with_prefix_and_default_root(logged, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = logged.download(path_prefix="sub/deep")
    assert os.path.normpath(root) == os.path.join("artifacts", "data-v0")
    got = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    assert got == ["sub/deep/c.bin"]
    entry = logged.get_entry("sub/b.txt")
    assert entry.download(str(tmp_path / "one")) == str(tmp_path / "one" / "sub/b.txt")
    with pytest.raises(KeyError):
        logged.get_entry("nope")


def test_download_keeps_the_executable_bit(env, tmp_path):
    src = write_files(str(tmp_path / "src"), {"run.sh": "#!/bin/sh\n", "data": "d"})
    os.chmod(os.path.join(src, "run.sh"), 0o755)
    art = Artifact("tools", "code")
    art.add_dir(src)
    out = art.save().download(str(tmp_path / "out"))
    assert os.stat(os.path.join(out, "run.sh")).st_mode & stat.S_IXUSR
    assert not os.stat(os.path.join(out, "data")).st_mode & stat.S_IXUSR


def test_file_and_files(logged, env, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        logged.file(str(tmp_path))
    one = Artifact("single", "model")
    one.add_file(write_files(str(tmp_path / "s"), {"w.pt": "weights"}) + "/w.pt")
    one.save()
    path = Api().artifact("single").file(str(tmp_path / "o"))
    assert path == str(tmp_path / "o" / "w.pt") and read(path) == b"weights"
    assert [e.path for e in logged.files(["sub/b.txt", "nope", "a.txt"])] == ["sub/b.txt", "a.txt"]
    assert [e.path for e in logged.files()] == sorted(FILES)


# -- Api ------------------------------------------------------------------------
def test_api_lookups(logged, tmp_path):
    api = Api()
    assert api.artifact("data").version == "v0"
    assert api.artifact("proj/data:v0").id == logged.id
    assert api.artifact(f"{logged.entity}/proj/data:latest").id == logged.id  # the entity is checked
    with pytest.raises(ValueError, match="type"):
        api.artifact("data", type="model")
    with pytest.raises(NotFoundError):
        api.artifact("nothing")
    with pytest.raises(NotFoundError):
        api.artifact("data:v9")
    with pytest.raises(NotFoundError):
        api.artifact("data:no-such-alias")
    assert api.artifact_exists("data:v0") and not api.artifact_exists("data:v1")
    m = Artifact("weights", "model")
    m.add_file(write_files(str(tmp_path / "m"), {"w": "w"}) + "/w")
    m.save()
    assert sorted(c.name for c in api.artifact_collections()) == ["data", "weights"]
    assert [c.name for c in api.artifact_collections(type="model")] == ["weights"]
    assert api.artifact_collections("empty-project") == []
    assert [a.name for a in api.artifact_versions("data")] == ["data:v0"]
    # W&B's order, Api.artifact_versions(type_name, name), and its newer name Api.artifacts
    assert [a.name for a in api.artifact_versions("model", "weights")] == ["weights:v0"]
    assert [a.name for a in api.artifacts("model", "weights")] == ["weights:v0"]
    with pytest.raises(NotFoundError):
        api.artifact_versions("model", "data")  # data is a dataset: not mixed up with a collection named so
    assert [f.name for f in api.artifact("weights:v0").files()] == ["w"]  # a W&B File's name


@pytest.mark.local_store  # a file:// URL of the same store
def test_api_with_explicit_store_and_project(logged, env, monkeypatch):
    monkeypatch.delenv("ARTIFACTFS_STORE")
    monkeypatch.delenv("ARTIFACTFS_PROJECT")
    assert Api(env, project="proj").artifact("data").id == logged.id
    assert Api("file://" + env).artifact("proj/data").id == logged.id


# -- corruption and hostile targets -------------------------------------------------
def test_corrupted_blob_names_the_file(logged, env, tmp_path):
    reg = Registry.open(env)
    root = reg.version(logged.project, logged.collection, int(logged.version[1:])).root
    corrupt(reg.store, reg.lookup(root, "sub/b.txt"), b"BETA")  # its blob, or its pack on S3
    with pytest.raises(DigestMismatchError, match="sub/b.txt"):
        Api().artifact("data").download(str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "sub" / "b.txt")


@pytest.mark.local_store  # the local store sets a damaged blob aside (store/aside.py); S3 only reports it
def test_a_damaged_blob_is_set_aside_and_putting_the_right_bytes_repairs_it(logged, env, src, tmp_path):
    """Blobs are never overwritten, so a damaged one would stay damaged for every
    later put of the right bytes.  The read that finds it moves it aside; the
    next save of those bytes stores them, and the older version reads again."""
    reg = Registry.open(env)
    entry = reg.lookup(reg.version(logged.project, logged.collection, 0).root, "sub/b.txt")
    assert entry.pack is None
    right = read(os.path.join(src, "sub", "b.txt"))
    corrupt(reg.store, entry, bytes(len(right)))
    with pytest.raises(DigestMismatchError, match="moved aside to damaged/"):
        Api().artifact("data:v0").download(str(tmp_path / "out"))
    with pytest.raises(ObjectNotFound):  # the key is free now
        reg.store.get(blob_key(entry.chunks[0]))
    again = Artifact("copy", "dataset")
    again.add_file(os.path.join(src, "sub", "b.txt"))
    again.save()
    out = Api().artifact("data:v0").download(str(tmp_path / "out2"))
    assert read(os.path.join(out, "sub", "b.txt")) == right


def test_download_never_follows_a_planted_directory_symlink(logged, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    os.symlink(elsewhere, root / "sub")
    with pytest.raises(ArtifactfsError, match="sub"):
        logged.download(str(root))
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ArtifactfsError):
        logged.checkout(str(root))
    assert list(elsewhere.iterdir()) == [] and os.path.islink(root / "sub")


def test_download_never_writes_through_a_planted_file_symlink(logged, tmp_path):
    victim = write_files(str(tmp_path / "elsewhere"), {"victim": "precious"}) + "/victim"
    root = tmp_path / "out"
    root.mkdir()
    os.symlink(victim, root / "a.txt")
    with pytest.raises(ArtifactfsError, match="a.txt"):
        logged.download(str(root))
    assert read(victim) == b"precious"


def test_versions_of_an_unknown_collection(logged):
    with pytest.raises(NotFoundError):
        Api().artifact_versions("nothing")


def test_default_store_and_project(tmp_path, monkeypatch, src):
    from artifactfs.store import default_store_url
    monkeypatch.delenv("ARTIFACTFS_STORE", raising=False)
    monkeypatch.delenv("ARTIFACTFS_PROJECT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_url() == str(tmp_path / "xdg" / "artifactfs" / "store")
    art = Artifact("data", "dataset")
    art.add_dir(src)
    art.save()
    assert art.project == "default" and art.entity == "store"
    assert art.url.startswith("file://" + str(tmp_path / "xdg" / "artifactfs" / "store") + "/")
    assert Api().artifact("default/data").id == art.id
