"""What the registry accepts from callers and what it skips of a shared store:
metadata limits, the entity name of a store, and the one warning per entry that
something else wrote and the format cannot hold (docs/store-format.md 1.1)."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from ..errors import UsageError, shown

MAX_METADATA_KEYS = 100
log = logging.getLogger("artifactfs.registry")
_skipped: set[str] = set()  # keys warned about, so each is reported once per process


def skip_entry(key: str, why: str) -> None:
    """Warn once per process that store entry `key` is ignored, and why: a name the
    format cannot hold or a record that does not parse, written by something else
    (docs/store-format.md 1.1).  Everything valid beside it keeps working."""
    if key not in _skipped:
        _skipped.add(key)
        log.warning("ignoring %s in the store: %s", shown(key), why)


def default_entity(url: str) -> str:
    """The name (entity) a store made at `url` gets: the last component of its path."""
    return os.path.basename(unquote(url).rstrip("/")) or "store"


def check_metadata(metadata: Mapping[str, Any] | None) -> dict:
    """At most 100 keys, JSON-serialisable values; returns a plain copy."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise UsageError("metadata must be a dict")
    if len(metadata) > MAX_METADATA_KEYS:
        raise UsageError(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} allowed")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise UsageError(f"metadata is not JSON-serialisable: {e}") from None
