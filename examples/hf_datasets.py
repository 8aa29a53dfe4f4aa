"""A Hugging Face dataset saved with `save_to_disk`, logged as a version and
loaded from the mount with `datasets.load_from_disk`.

A version is read-only, and by default `datasets` writes the cache files of
`map`/`filter` next to the dataset's arrow files: that fails with EROFS
("Read-only file system").  Turn caching off (results stay in memory), or give
each transform a `cache_file_name` outside the mount.

    python examples/hf_datasets.py /mnt/af/reviews/reviews@latest
"""
from __future__ import annotations

import argparse

import datasets


def load(folder: str) -> datasets.Dataset:
    datasets.disable_caching()  # no cache files next to the arrow files of the (read-only) version
    ds = datasets.load_from_disk(folder)
    return ds.map(lambda row: {"length": len(row["text"])})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="the version folder holding the saved dataset")
    ds = load(ap.parse_args().folder)
    print(f"rows {len(ds)}")
    print(f"first {ds[0]['text']!r} length {ds[0]['length']}")
