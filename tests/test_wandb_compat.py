"""Digest and manifest compatibility with the real `wandb` package (offline):
the same files give the same entry digests, artifact digest and manifest JSON."""
from __future__ import annotations

import os
import random

import pytest

from artifactfs import Api, Artifact
from artifactfs.manifest import CHUNK_SIZE
from core_util import write_files


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
        assert dict(mine[path].extra) == dict(theirs[path].extra) == {"alg": "XXH128"}


def test_artifact_digest_and_manifest_json_match(wandb, src, store_url):
    theirs = wandb_artifact(wandb, src)
    draft = ours(src, store_url)
    expected_json = theirs.manifest.to_manifest_json()
    assert draft.json_encode() == expected_json
    assert draft.digest == theirs.manifest.digest()
    logged = draft.save("proj")
    assert logged.digest == theirs.manifest.digest()
    reread = Api(store_url, project="proj").artifact("compat:v0")
    assert reread.json_encode() == expected_json
    assert reread.digest == theirs.manifest.digest()
    assert reread.size == theirs.manifest.size()


def test_wandb_reads_our_manifest(wandb, src, store_url):
    from wandb.sdk.artifacts._generated import ArtifactDigestAlgorithm
    from wandb.sdk.artifacts.artifact_manifests.artifact_manifest_v1 import ArtifactManifestV1
    logged = ours(src, store_url).save("proj")
    parsed = ArtifactManifestV1.from_manifest_json(
        logged.json_encode(), digest_algorithm=ArtifactDigestAlgorithm.MANIFEST_XXH128)
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
    assert mine.json_encode() == theirs.manifest.to_manifest_json()
