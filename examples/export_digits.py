"""Export scikit-learn's bundled digits (1,797 real 8x8 images, no download)
as PNG files in class folders, the layout image loaders expect:

    OUT/train/<digit>/<index>.png   (4 of every 5 images)
    OUT/test/<digit>/<index>.png    (every 5th image)

    python examples/export_digits.py ./digits
    artifactfs put ./digits digits --type dataset
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def export(out: str) -> int:
    """Write the PNGs; returns how many."""
    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        split = "test" if i % 5 == 0 else "train"
        folder = os.path.join(out, split, str(label))
        os.makedirs(folder, exist_ok=True)
        img = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L")  # 0..16 -> 0..255
        img.save(os.path.join(folder, f"{i:04d}.png"))
    return len(digits.images)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder to write (created)")
    print(f"wrote {export(ap.parse_args().out)} PNG files")
