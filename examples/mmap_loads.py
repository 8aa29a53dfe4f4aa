"""Memory-mapped loads from a version: safetensors and numpy map the file and
read only the pages they touch, so opening a large checkpoint or array in a
version fetches only what is used (by 8 MiB chunk), and the kernel page cache
keeps it for the next process.

    python examples/mmap_loads.py /mnt/af/weights/weights@latest

The folder holds model.safetensors and embeddings.npy."""
from __future__ import annotations

import argparse
import os

import numpy as np
from safetensors import safe_open


def load(folder: str) -> dict[str, float]:
    """A sum per tensor/array, read through memory maps (nothing is copied whole)."""
    out = {}
    with safe_open(os.path.join(folder, "model.safetensors"), framework="np") as f:  # mmap inside
        for name in f.keys():
            out[name] = float(f.get_tensor(name).sum())
    emb = np.load(os.path.join(folder, "embeddings.npy"), mmap_mode="r")  # read-only map: a version is read-only
    out["embeddings[-1]"] = float(emb[-1].sum())  # touches the last rows only
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a version folder (or a folder in it) in the mount")
    for key, value in load(ap.parse_args().folder).items():
        print(f"{key} {value:.6f}")
