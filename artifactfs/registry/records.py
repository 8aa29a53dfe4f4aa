"""The records the registry hands out: a committed version (its immutable record
merged with its current attributes) and a collection (docs/store-format.md 3)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class VersionInfo:
    """A committed version: its immutable record merged with its current attributes."""

    project: str
    collection: str
    version: int
    type: str
    root: str
    digest: str
    size: int
    file_count: int
    created_at: str
    commit_hash: str
    id: str
    base: int | None
    description: str | None = None
    metadata: dict = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    ttl: float | None = None
    state: str = "COMMITTED"
    updated_at: str | None = None
    aliases: list[str] = field(default_factory=list)
    deleted_at: str | None = None
    link: dict | None = None  # a portfolio member: {"project", "collection", "version"} of its source
    run: dict | None = None   # the producer's run record (runinfo.RunRecord.to_json())

    @property
    def name(self) -> str:
        return f"{self.collection}:v{self.version}"

    @property
    def deleted(self) -> bool:
        return self.state == "DELETED"


@dataclass
class CollectionInfo:
    project: str
    name: str
    type: str
    description: str | None
    created_at: str
    portfolio: bool = False  # holds links to versions of other collections (links.py)


# the attributes of a version that change after its commit (v<N>.attrs.json)
ATTR_FIELDS = ("description", "metadata", "tags", "ttl", "state", "updated_at", "deleted_at")

_COUNT, _TEXT, _OPTIONAL_TEXT = "a whole number >= 0", "text", "text or null"
_RECORD_TYPES = {"type": _TEXT, "digest": _TEXT, "size": _COUNT, "file_count": _COUNT, "created_at": "a time",
                 "commit_hash": _TEXT, "id": _TEXT, "base": "a version number or null",
                 "description": _OPTIONAL_TEXT, "metadata": "an object or null", "tags": "a list of text or null",
                 "ttl": "a number or null", "link": "an object or null", "run": "an object or null",
                 "state": _TEXT, "updated_at": "a time or null", "deleted_at": "a time or null"}


def _fits(value: object, kind: str) -> bool:
    if value is None:
        return "null" in kind
    if kind.startswith("a time"):
        try:
            return isinstance(value, str) and datetime.fromisoformat(value) is not None
        except ValueError:
            return False
    if kind in (_COUNT, "a version number or null"):
        return type(value) is int and value >= 0
    if kind.startswith("text"):
        return isinstance(value, str)
    if kind.startswith("an object"):
        return isinstance(value, dict)
    if kind.startswith("a list"):
        return isinstance(value, list) and all(isinstance(t, str) for t in value)
    return type(value) in (int, float)  # a number


def check_record(rec: object, required: tuple[str, ...] = ()) -> dict:
    """A version record (`required`: its members that must be present) or attributes
    record (docs/store-format.md 3.4, 3.6) whose members have the types readers
    rely on; ValueError naming the first member that does not (a record another
    tool wrote, or damaged), so that no reader fails on it later."""
    if not isinstance(rec, dict):
        raise ValueError(f"not a JSON object but {type(rec).__name__}")
    for name in required:
        if name not in rec:
            raise ValueError(f"member {name!r} is missing")
    for name, kind in _RECORD_TYPES.items():
        if name in rec and not _fits(rec[name], kind):
            raise ValueError(f"member {name!r} is {rec[name]!r:.40}, not {kind}")
    return rec
