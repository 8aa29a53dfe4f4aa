"""The records the registry hands out: a committed version (its immutable record
merged with its current attributes) and a collection (docs/store-format.md 3)."""
from __future__ import annotations

from dataclasses import dataclass, field


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
