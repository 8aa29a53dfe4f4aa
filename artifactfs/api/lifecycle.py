"""Deleting versions, TTL and the per-project default TTL (W&B `delete()`, `ttl`).

  projects/<p>/project.json                       {"default_ttl": seconds | null}  (CAS)
  projects/<p>/collections/<c>/deleted.json       {"versions": [N, ...]}            (CAS)

A version's stored `ttl` is seconds (> 0), null (inherit the project's default:
the W&B default for a version nobody set a TTL on) or -1 (never expires, even
with a project default: W&B's `artifact.ttl = None`).  Deleting a version marks
it DELETED (its attributes) and adds it to deleted.json, which listings use;
its record stays and its number is never reused.  Its files stay in the store
until `gc` (gc.py) finds nothing live refers to them."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from ..errors import ArtifactfsError, ObjectNotFound, UsageError
from ..registry.names import check_name
from ..registry.versions import Registry, VersionInfo
from ..timestamps import now_iso

NEVER = -1.0


class HasAliasesError(ArtifactfsError, ValueError):
    """delete() of a version that still has aliases, without delete_aliases=True."""


def _project_key(project: str) -> str:
    return f"projects/{check_name(project, 'project')}/project.json"


def default_ttl(registry: Registry, project: str) -> float | None:
    """The project's default TTL in seconds, or None (versions do not expire)."""
    try:
        d = json.loads(registry.store.get(_project_key(project)))
    except ObjectNotFound:
        return None
    value = d.get("default_ttl")
    return None if value is None else float(value)


def set_default_ttl(registry: Registry, project: str, seconds: float | None) -> None:
    if seconds is not None and seconds <= 0:
        raise UsageError("a default TTL must be positive (or none)")

    def change(d: dict) -> dict:
        d["default_ttl"] = seconds
        return d
    registry._cas_json(_project_key(project), change)


def effective_ttl(info: VersionInfo, project_default: float | None) -> float | None:
    """Seconds after created_at when the version expires, or None (never)."""
    if info.ttl is None:
        return project_default
    return None if info.ttl == NEVER else float(info.ttl)


def expires_at(info: VersionInfo, project_default: float | None) -> dt.datetime | None:
    ttl = effective_ttl(info, project_default)
    if ttl is None:
        return None
    return dt.datetime.fromisoformat(info.created_at) + dt.timedelta(seconds=ttl)


def parse_duration(text: str) -> float | None:
    """'30d', '12h', '90m', '45s', '2w' -> seconds; 'none' -> None (never).  ValueError otherwise."""
    t = text.strip().lower()
    if t in ("none", "never"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if len(t) >= 2 and t[-1] in units and t[:-1].isdigit() and int(t[:-1]) > 0:
        return float(int(t[:-1]) * units[t[-1]])
    raise UsageError(f"invalid duration {text!r}: use e.g. 30d, 12h, 90m, 2w or none")


def set_ttl(registry: Registry, project: str, name: str, version: int, seconds: float | None,
            inherit: bool = False) -> VersionInfo:
    """TTL of one version: seconds, None (never expires) or inherit the project default."""
    if seconds is not None and seconds <= 0:
        raise UsageError("ttl must be positive")
    stored = None if inherit else (NEVER if seconds is None else float(seconds))
    return registry.update_attrs(project, name, version, lambda d: d.update(ttl=stored))


@dataclass
class Deleted:
    version: VersionInfo
    aliases_removed: list[str]


def delete_version(registry: Registry, project: str, name: str, version: int,
                   delete_aliases: bool = False) -> Deleted:
    """Mark a version DELETED (W&B Artifact.delete).  HasAliasesError while aliases
    point at it, unless delete_aliases.  Deleting an already deleted version is a no-op."""
    info = registry.version(project, name, version)
    if info.deleted and version in registry.deleted(project, name):
        return Deleted(info, [])
    own = [a for a in info.aliases if a != "latest"]
    if own and not delete_aliases:
        raise HasAliasesError(f"{name}:v{version} has aliases {', '.join(own)}; "
                              "pass delete_aliases=True (--delete-aliases) to remove them too")
    for a in own:
        registry.set_alias(project, name, a, None)
    when = now_iso()
    registry.update_attrs(project, name, version, lambda d: d.update(state="DELETED", deleted_at=d.get("deleted_at") or when))

    def add(d: dict) -> dict:
        d["versions"] = sorted(set(d.get("versions", [])) | {version})
        return d
    registry._cas_json(f"projects/{project}/collections/{name}/deleted.json", add)
    return Deleted(registry.version(project, name, version), own)
