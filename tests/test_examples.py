"""The scripts in examples/, each run against a real mount of a store holding
the versions it reads: a PyTorch DataLoader over real images with the
checkpoint written into draft/ and synced, safetensors/numpy memory maps, and
Hugging Face datasets (which fails with EROFS unless caching is off)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mountutil import mounted

from artifactfs.api.artifact import Artifact
from artifactfs.registry.versions import Registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
PROJECT = "proj"
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}  # nothing may be downloaded


def example(name: str, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True,
                          text=True, env=env, timeout=600, cwd="/")
    if check and done.returncode != 0:
        raise AssertionError(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def put(store: str, name: str, folder: str) -> None:
    art = Artifact(name, "dataset", store=store)
    art.add_dir(folder)
    art.save(PROJECT)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, dict]:
    """digits (PNG), weights (safetensors + npy), reviews (datasets.save_to_disk)."""
    import datasets
    import numpy as np
    from safetensors.numpy import save_file
    tmp = tmp_path_factory.mktemp("examples")
    url = str(tmp / "store")
    Registry.open(url, create=True)
    env = {**os.environ, **OFFLINE}
    example("export_digits.py", str(tmp / "digits"), env=env)
    put(url, "digits", str(tmp / "digits"))
    rng = np.random.default_rng(0)
    (tmp / "weights").mkdir()
    tensors = {"w": rng.standard_normal((64, 32), dtype=np.float32), "b": np.arange(32, dtype=np.float32)}
    save_file(tensors, str(tmp / "weights" / "model.safetensors"))
    emb = rng.standard_normal((5000, 64)).astype(np.float32)  # 1.2 MiB
    np.save(tmp / "weights" / "embeddings.npy", emb)
    put(url, "weights", str(tmp / "weights"))
    datasets.Dataset.from_dict({"text": ["good film", "bad plot", "fine"], "label": [1, 0, 1]}).save_to_disk(
        str(tmp / "reviews"))
    put(url, "reviews", str(tmp / "reviews"))
    sums = {**{k: float(v.sum()) for k, v in tensors.items()}, "embeddings[-1]": float(emb[-1].sum())}
    return url, sums


@pytest.fixture(scope="module")
def mnt(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("examples-mnt")
    with mounted(store[0], tmp / "mnt", "--cache-dir", str(tmp / "cache")) as m:
        yield m


def env_of(m) -> dict[str, str]:
    return {**m.env, **OFFLINE, "ARTIFACTFS_STORE": m.store, "ARTIFACTFS_PROJECT": PROJECT}


def test_train_through_the_mount_and_sync_the_checkpoint(mnt):
    import torch
    ckpt = mnt.p("digits-model", "draft", "model.pt")
    out = example("train_digits.py", "--data", mnt.p("digits", "digits@latest"), "--checkpoint", ckpt,
                  "--sync", "--epochs", "4", env=env_of(mnt)).stdout
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.85, out  # real digits: a small CNN gets ~0.95
    version = mnt.p("digits-model", "digits-model:latest")
    meta = json.loads(os.getxattr(version, "user.artifact.metadata"))
    assert meta["data"] == "digits:v0" and abs(meta["accuracy"] - accuracy) < 1e-3
    assert os.getxattr(version, "user.artifact.type") == b"model"
    state = torch.load(os.path.join(version, "model.pt"), weights_only=True)
    assert set(state) >= {"0.weight", "4.weight", "6.bias"}


def test_memory_mapped_safetensors_and_numpy(mnt, store):
    out = example("mmap_loads.py", mnt.p("weights", "weights@latest"), env=env_of(mnt)).stdout
    got = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()}
    assert got.keys() == store[1].keys()
    for key, value in store[1].items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-4), key


def test_hf_datasets_load_from_disk(mnt):
    out = example("hf_datasets.py", mnt.p("reviews", "reviews@v0"), env=env_of(mnt)).stdout
    assert "rows 3" in out and "first 'good film' length 9" in out
    # what the frameworks page warns about: with caching on, map() writes next to the arrow files
    code = ("import datasets, sys; ds = datasets.load_from_disk(sys.argv[1]); "
            "ds.map(lambda r: {'n': len(r['text'])})")
    done = subprocess.run([sys.executable, "-c", code, mnt.p("reviews", "reviews@v0")], capture_output=True,
                          text=True, env=env_of(mnt), timeout=300, cwd="/")
    assert done.returncode != 0 and "Read-only file system" in done.stderr
