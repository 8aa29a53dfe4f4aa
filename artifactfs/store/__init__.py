"""Object stores, named by URL: 'file:///abs/path', a plain path, or 's3://bucket/prefix'."""
from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from ..errors import StoreError, shown
from .base import ObjectStore
from .local import LocalStore

__all__ = ["ObjectStore", "LocalStore", "open_store", "default_store_url"]


def default_store_url() -> str:
    """$ARTIFACTFS_STORE, else ${XDG_DATA_HOME:-~/.local/share}/artifactfs/store."""
    env = os.environ.get("ARTIFACTFS_STORE")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "artifactfs", "store")


def open_store(url: str | None = None) -> ObjectStore:
    url = url or default_store_url()
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise StoreError(f"store URL {url!r}: file URLs take no host")
        return LocalStore(_not_below_a_file(os.path.expanduser(path)))
    if parsed.scheme == "s3":
        from .s3 import S3Store  # imported only when used: boto3 is optional
        return S3Store(url)
    raise StoreError(f"store URL {url!r}: unsupported scheme {parsed.scheme!r} (use file://, s3:// or a path)")


def _not_below_a_file(path: str) -> str:
    """`path`, once sure that neither it nor a folder it would be made in is a
    file (else one line, rather than ENOTDIR from the first object read)."""
    p = os.path.abspath(path)
    while not os.path.lexists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    if os.path.exists(p) and not os.path.isdir(p):
        raise StoreError(f"{shown(p)} is a file, not a store directory")
    return path
