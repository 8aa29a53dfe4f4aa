"""Artifact metadata as extended attributes (`getfattr -d`): how registry
records become `user.artifact.*` names and byte values."""
from __future__ import annotations

import json
from typing import Any

from ..registry.manifest import FileEntry
from ..registry.versions import CollectionInfo, VersionInfo

PREFIX = "user.artifact."


def xattr_value(value: Any) -> bytes:
    """Text; lists comma-joined; dicts as JSON; None as empty."""
    if value is None:
        return b""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True).encode()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value).encode()
    return str(value).encode()


def _named(values: dict[str, Any]) -> dict[str, bytes]:
    return {PREFIX + k: xattr_value(v) for k, v in values.items()}


def version_xattrs(info: VersionInfo) -> dict[str, bytes]:
    return _named({
        "name": info.collection, "version": f"v{info.version}", "type": info.type,
        "digest": info.digest, "description": info.description, "metadata": info.metadata or {},
        "aliases": info.aliases, "tags": info.tags, "created_at": info.created_at,
        "size": info.size, "file_count": info.file_count, "state": info.state, "ttl": info.ttl,
    })


def collection_xattrs(info: CollectionInfo) -> dict[str, bytes]:
    return _named({"name": info.name, "type": info.type, "description": info.description})


def file_xattrs(entry: FileEntry) -> dict[str, bytes]:
    values: dict[str, Any] = {"digest": entry.digest, "size": entry.size}
    if entry.ref is not None:
        values["ref"] = entry.ref
    return _named(values)
