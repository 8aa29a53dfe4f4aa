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
    """delete() of a version that still has aliases, without delete_aliases=True.
    The message names the API's argument; a caller with another way to say it
    (the CLI's --delete-aliases) words it with hint()."""

    def __init__(self, label: str, aliases: list[str]) -> None:
        self.label, self.aliases = label, aliases
        super().__init__(self.hint("delete_aliases=True"))

    def hint(self, how: str) -> str:
        """The message, telling to pass `how` to remove the aliases too."""
        return f"{self.label} has aliases {', '.join(self.aliases)}; pass {how} to remove them too"


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


_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, *, zero: bool = False, never: bool = True) -> float | None:
    """A duration as users type it -> seconds: '30d', '12h', '90m', '45s', '2w';
    'none' or 'never' -> None (never expires) where `never`; '0' or '0s' (any
    unit) -> 0.0 where `zero` (a grace period, not a TTL: W&B's TTLs are
    positive).  UsageError (a ValueError) otherwise, naming what is accepted."""
    t = text.strip().lower()
    if never and t in ("none", "never"):
        return None
    digits = t[:-1] if t[-1:] in _UNITS else t if zero and t == "0" else ""
    number = digits.isascii() and digits.isdigit()
    if number and (int(digits) > 0 or zero):
        return float(int(digits) * _UNITS.get(t[-1], 1))
    examples = "e.g. 30d, 12h, 90m, 2w" + (", 0" if zero else "") + (" or none" if never else "")
    zero_refused = " (it must be positive)" if number else ""
    raise UsageError(f"invalid duration {text!r}{zero_refused}: use {examples}")


def format_duration(seconds: float) -> str:
    """Seconds -> the form parse_duration reads: the largest of d, h, m, s that
    divides them ('30d', '36h', '90m'); weeks show as days."""
    for unit in ("d", "h", "m", "s"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def describe_ttl(stored: float | None, project_default: float | None) -> str:
    """A version's stored ttl as `ttl` takes it: '30d', 'none' (never expires)
    or 'inherit (default 90d)' / 'inherit (default none)'."""
    if stored is None:
        return f"inherit (default {'none' if project_default is None else format_duration(project_default)})"
    return "none" if stored == NEVER else format_duration(stored)


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
        raise HasAliasesError(f"{name}:v{version}", own)
    for a in own:
        registry.set_alias(project, name, a, None)
    when = now_iso()
    registry.update_attrs(project, name, version, lambda d: d.update(state="DELETED", deleted_at=d.get("deleted_at") or when))

    def add(d: dict) -> dict:
        d["versions"] = sorted(set(d.get("versions", [])) | {version})
        return d
    registry._cas_json(f"projects/{project}/collections/{name}/deleted.json", add)
    return Deleted(registry.version(project, name, version), own)
