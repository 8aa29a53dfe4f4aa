"""Digest and manifest compatibility with the real `wandb` package (offline):
the same files give the same entry digests, artifact digest and manifest JSON."""
from __future__ import annotations

import json
import os
import random
import shutil

import pytest
from core_util import write_files

import artifactfs
from artifactfs import Api, Artifact
from artifactfs.registry.manifest import CHUNK_SIZE

BOTH_STORES = True  # tests using store_url/env run on a local and an S3 store (tests/conftest.py)


@pytest.fixture
def wandb(tmp_path, monkeypatch):
    """The wandb package, offline and quiet, with every directory it uses in tmp."""
    for var, sub in (("WANDB_DIR", "dir"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        os.makedirs(tmp_path / "wandb" / sub)
        monkeypatch.setenv(var, str(tmp_path / "wandb" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return pytest.importorskip("wandb")


@pytest.fixture
def src(tmp_path) -> str:
    rnd = random.Random(7)
    root = write_files(str(tmp_path / "src"), {
        "a.txt": "hello\n",
        "empty": b"",
        "nested/deeper/c.csv": "x,y\n1,2\n",
        "nested/b.json": '{"k": 1}',
        "nested/ünï cödé.txt": "names are compared byte-wise",
        "big/exactly-one-chunk.bin": rnd.randbytes(CHUNK_SIZE),
        "big/over-8mib.bin": rnd.randbytes(CHUNK_SIZE + 4097),
    })
    os.chmod(os.path.join(root, "a.txt"), 0o755)
    return root


def wandb_artifact(wandb, src: str):
    art = wandb.Artifact("compat", "dataset", digest_algorithm="XXH128")
    art.add_dir(src)
    art.add_file(os.path.join(src, "a.txt"), name="renamed/a-copy.txt")
    return art


def ours(src: str, store: str) -> Artifact:
    art = Artifact("compat", "dataset", store=store)
    art.add_dir(src)
    art.add_file(os.path.join(src, "a.txt"), name="renamed/a-copy.txt")
    return art


def test_xxh128_is_selected_by_digest_algorithm(wandb):
    from wandb.sdk.artifacts._generated import ArtifactDigestAlgorithm
    art = wandb.Artifact("x", "dataset", digest_algorithm="XXH128")
    assert art.digest_algorithm is ArtifactDigestAlgorithm.MANIFEST_XXH128


def test_entry_digests_match(wandb, src, store_url):
    theirs = wandb_artifact(wandb, src).manifest.entries
    mine = ours(src, store_url).manifest.entries
    assert sorted(theirs) == sorted(mine)
    assert len(mine) == 8
    for path in theirs:
        assert mine[path].digest == theirs[path].digest, path
        assert mine[path].size == theirs[path].size, path
        assert dict(theirs[path].extra) == {"alg": "XXH128"}
        local = os.path.join(src, path) if not path.startswith("renamed/") else os.path.join(src, "a.txt")
        assert dict(mine[path].extra) == {"alg": "XXH128", "mtime_ns": os.stat(local).st_mtime_ns}


def without_mtimes(manifest: dict) -> dict:
    """A manifest JSON with extra.mtime_ns (ours; store-format.md 4) taken out."""
    contents = {}
    for path, item in manifest["contents"].items():
        assert isinstance(item["extra"].pop("mtime_ns"), int), path
        contents[path] = item
    return {**manifest, "contents": contents}


def test_artifact_digest_and_manifest_json_match(wandb, src, store_url):
    theirs = wandb_artifact(wandb, src)
    draft = ours(src, store_url)
    expected_json = theirs.manifest.to_manifest_json()
    assert without_mtimes(draft.manifest.to_manifest_json()) == expected_json
    assert draft.digest == theirs.manifest.digest()
    logged = draft.save("proj")
    assert logged.digest == theirs.manifest.digest()
    reread = Api(store_url, project="proj").artifact("compat:v0")
    assert without_mtimes(reread.manifest.to_manifest_json()) == expected_json
    assert reread.digest == theirs.manifest.digest()
    assert reread.size == theirs.manifest.size()


def test_json_encode_has_wandbs_shape(wandb, src, store_url):
    """wandb.util.artifact_to_json: logged artifacts only (W&B raises before logging too)."""
    from wandb.sdk.artifacts.exceptions import ArtifactNotLoggedError as TheirNotLogged
    with pytest.raises(TheirNotLogged):
        wandb_artifact(wandb, src).json_encode()
    draft = ours(src, store_url)
    with pytest.raises(artifactfs.ArtifactNotLoggedError):
        draft.json_encode()
    logged = draft.save("proj")
    assert logged.json_encode() == {"_type": "artifactVersion", "_version": "v0", "id": logged.id,
                                    "version": "v0", "sequenceName": "compat", "usedAs": None}


def test_wandb_reads_our_manifest(wandb, src, store_url):
    from wandb.sdk.artifacts._generated import ArtifactDigestAlgorithm
    from wandb.sdk.artifacts.artifact_manifests.artifact_manifest_v1 import ArtifactManifestV1
    logged = ours(src, store_url).save("proj")
    parsed = ArtifactManifestV1.from_manifest_json(
        logged.manifest.to_manifest_json(), digest_algorithm=ArtifactDigestAlgorithm.MANIFEST_XXH128)
    assert parsed.digest() == logged.digest
    assert {p: e.digest for p, e in parsed.entries.items()} == \
           {e.path: e.digest for e in logged.files()}


def test_downloaded_files_hash_the_same_in_wandb(wandb, src, store_url, tmp_path):
    from wandb.sdk.lib.hashutil import xxh128_file_b64
    logged = ours(src, store_url).save("proj")
    root = logged.download(str(tmp_path / "out"))
    for entry in logged.files():
        assert xxh128_file_b64(os.path.join(root, entry.path)) == entry.digest


def test_empty_artifact_digest_matches(wandb, store_url):
    theirs = wandb.Artifact("e", "dataset", digest_algorithm="XXH128")
    mine = Artifact("e", "dataset", store=store_url)
    assert mine.digest == theirs.manifest.digest()
    assert mine.manifest.to_manifest_json() == theirs.manifest.to_manifest_json()


# -- every way of making a version gives wandb's digest, over odd names ---------
ODD_NAMES = ["new\nline", "tab\there", "caf\u00e9", "cafe\u0301", "with  spaces ", "100%", "at 10:30", "#hash",
             "-leading", "x" * 251 + ".bin", "é" * 127, "a-c", "a.c", "a0", "ab", "~tilde", "a=b&c"]
DEEP = "/".join(f"d{i}" for i in range(40))


def odd_files() -> dict[str, bytes]:
    files = {}
    for i, name in enumerate(ODD_NAMES):
        files[name] = f"top {i}".encode()
        files[f"sub/{name}"] = f"sub {i}".encode()
        files[f"{name[:100]}-dir/inner"] = f"inner {i}".encode()
    files["sub/a/b"] = b"below a"   # sorts between "sub/a-c" and "sub/a.c" as a full path
    files["sub/c:d"] = b"a colon"   # (wandb refuses "c:d" at the top: a Windows drive)
    files[f"{DEEP}/leaf\nx"] = b"deep"
    return files


@pytest.fixture
def odd_src(tmp_path) -> str:
    root = str(tmp_path / "odd")
    for path, data in odd_files().items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    return root


@pytest.fixture
def odd_digest(wandb, odd_src) -> str:
    theirs = wandb.Artifact("odd", "dataset", digest_algorithm="XXH128")
    theirs.add_dir(odd_src)
    assert len(theirs.manifest.entries) == len(odd_files())
    return theirs.manifest.digest()


def test_odd_names_put_cli(odd_src, odd_digest, store_url):
    from mountutil import cli
    cli("--store", store_url, "put", odd_src, "odd", "--type", "dataset", check=True)
    info = json.loads(cli("--store", store_url, "info", "odd:v0", "--json", check=True).stdout)
    assert info["digest"] == odd_digest and info["file_count"] == len(odd_files())
    again = cli("--store", store_url, "put", odd_src, "odd", "--type", "dataset", check=True)
    assert again.stdout.strip() == "odd:v0 (unchanged)"


def test_odd_names_api_add_dir_and_add_file(odd_src, odd_digest, store_url):
    art = Artifact("odd", "dataset", store=store_url)
    art.add_dir(odd_src)
    assert art.digest == odd_digest
    assert art.save("proj").digest == odd_digest
    one_by_one = Artifact("odd2", "dataset", store=store_url)
    for path in odd_files():
        one_by_one.add_file(os.path.join(odd_src, path), name=path)
    assert one_by_one.save("proj").digest == odd_digest
    assert Api(store_url, project="proj").artifact("odd2:v0").digest == odd_digest


def test_odd_names_new_draft(odd_src, odd_digest, store_url):
    paths = sorted(odd_files())
    base = Artifact("odd", "dataset", store=store_url)
    for path in paths[::2]:
        base.add_file(os.path.join(odd_src, path), name=path)
    base.add_file(os.path.join(odd_src, paths[1]), name="to-be-removed\nsoon")
    base.save("proj")
    draft = base.new_draft()
    for path in paths[1::2]:
        draft.add_file(os.path.join(odd_src, path), name=path)
    draft.remove("to-be-removed\nsoon")
    assert draft.digest == odd_digest
    assert draft.save("proj").digest == odd_digest and draft.version == "v1"


def test_odd_names_draft_commit_through_the_mount(odd_src, odd_digest, store_url, tmp_path):
    from mountutil import cli, mounted
    with mounted(store_url, tmp_path / "mnt") as m:
        os.mkdir(m.p("odd"))
        shutil.copytree(odd_src, m.p("odd", "draft"), dirs_exist_ok=True)
        done = cli("sync", m.p("odd"), env=m.env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["odd:v0"]
    assert Api(store_url, project="proj").artifact("odd:v0").digest == odd_digest
    again = cli("--store", store_url, "--project", "proj", "put", odd_src, "odd", "--type", "dataset",
                check=True)
    assert again.stdout.strip() == "odd:v0 (unchanged)"


def test_add_dir_follows_symlinks_as_wandb_does(wandb, tmp_path, store_url):
    src = tmp_path / "linked"
    (src / "real").mkdir(parents=True)
    (src / "real" / "w.bin").write_bytes(b"weights")
    (src / "a.txt").write_text("a")
    os.symlink("a.txt", src / "to-file")
    os.symlink("real", src / "to-dir")
    theirs = wandb.Artifact("l", "dataset", digest_algorithm="XXH128")
    theirs.add_dir(str(src))
    mine = Artifact("l", "dataset", store=store_url)
    mine.add_dir(str(src))
    assert sorted(mine.manifest.entries) == sorted(theirs.manifest.entries) == [
        "a.txt", "real/w.bin", "to-dir/w.bin", "to-file"]
    assert mine.digest == theirs.manifest.digest()
    kept = Artifact("l", "dataset", store=store_url)
    kept.add_dir(str(src), follow_symlinks=False)  # ours only: the links as links (store-format.md 8)
    assert kept.digest != theirs.manifest.digest() and len(kept.manifest.entries) == 4
