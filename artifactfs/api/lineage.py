"""Lineage: who produced a version and who used it (W&B logged_by(), used_by(),
history_step).

The producer's run record is part of the version record (`run`, written by
commit).  Each use is one object, written once per (run, version):

  projects/<p>/collections/<c>/uses/v<N>/<run id>.json
      {"run": <run record>, "at": "<ISO 8601>", "via": "api" | "mount", "path": <first file> | null}

Uses of a link are recorded on its source, so a source's used_by() covers its links."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from threading import Lock

from ..errors import ArtifactfsError, ObjectNotFound
from ..registry.runinfo import RunRecord, current_run
from ..registry.versions import Registry, VersionInfo
from ..timestamps import now_iso
from .links import source_of

log = logging.getLogger("artifactfs.lineage")
_recorded: set[tuple[str, str, str, int, str]] = set()
_recorded_lock = Lock()


@dataclass
class Use:
    run: RunRecord
    at: str
    via: str
    path: str | None = None


def _prefix(info: VersionInfo) -> str:
    return f"projects/{info.project}/collections/{info.collection}/uses/v{info.version}/"


def logged_by(info: VersionInfo) -> RunRecord | None:
    """The producer's run record (None for versions written before lineage existed)."""
    return RunRecord.from_json(info.run) if info.run else None


def history_step(info: VersionInfo) -> int | None:
    run = logged_by(info)
    return run.step if run else None


def record_use(registry: Registry, info: VersionInfo, run: RunRecord, via: str,
               path: str | None = None) -> bool:
    """Store one use (the first per run and version wins); False if already stored."""
    source = source_of(registry, info)
    body = {"run": run.to_json(), "at": now_iso(), "via": via, "path": path}
    return registry.store.put_if_absent(_prefix(source) + f"{run.id}.json", json.dumps(body).encode())


def record_own_use(registry: Registry, info: VersionInfo) -> None:
    """This process used `info` (a download or an open through the API); one store
    write per process and version.  Best effort: a store this user may only read
    (S3 credentials without PutObject, a read-only file system) gets one warning
    (logger artifactfs.lineage) and the download or open goes on; W&B's
    use_artifact likewise never fails a download for lineage."""
    run = current_run()
    key = (registry.store.url, info.project, info.collection, info.version, run.id)
    with _recorded_lock:
        if key in _recorded:
            return
        _recorded.add(key)
    try:
        record_use(registry, info, run, "api")
    except (ArtifactfsError, OSError) as e:
        log.warning("the use of %s/%s was not recorded (lineage): %s", info.project, info.name,
                    getattr(e, "strerror", None) or e)


def uses(registry: Registry, info: VersionInfo) -> list[Use]:
    """Every recorded use of the version (and of its links), oldest first."""
    source = source_of(registry, info)
    out = []
    for key in registry.store.list(_prefix(source)):
        try:
            d = json.loads(registry.store.get(key))
        except (ObjectNotFound, ValueError):
            continue
        out.append(Use(RunRecord.from_json(d["run"]), d.get("at", ""), d.get("via", ""), d.get("path")))
    return sorted(out, key=lambda u: u.at)
