"""Where content-addressed objects live in a store (docs/store-format.md section 2)."""
from __future__ import annotations

BLOBS = "blobs/"
TREES = "trees/"
PACKS = "packs/"


def blob_key(hexdigest: str) -> str:
    """`blobs/<2 hex>/<32 hex>`: one file chunk."""
    return f"{BLOBS}{hexdigest[:2]}/{hexdigest}"


def tree_object_key(hexdigest: str) -> str:
    """`trees/<2 hex>/<32 hex>`: one directory object."""
    return f"{TREES}{hexdigest[:2]}/{hexdigest}"


def pack_object_key(name: str) -> str:
    """`packs/<2 hex>/<32 hex>`: small files packed together (chunks/packs.py)."""
    return f"{PACKS}{name[:2]}/{name}"
