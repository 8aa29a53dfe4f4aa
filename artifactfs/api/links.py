"""Links: portfolios and the model registry (W&B `Artifact.link()`).

A portfolio is a collection whose collection.json says `"portfolio": true`.  Each
of its versions is a *link*: a version record with the source's type, root, digest,
size and file count (so it reads like the source), its own number, id and
aliases, and `"link": {"project", "collection", "version", "id"}` naming the
source.  The model registry is the project `model-registry`.  A source knows its
links through empty marker objects

  projects/<p>/collections/<c>/links/v<N>/<portfolio project>/<portfolio>/v<M>

Deleting a link (delete() or unlink()) marks only the link DELETED; deleting a
source deletes its links too (they would name nothing)."""
from __future__ import annotations

import uuid

from ..errors import ArtifactfsError, NotFoundError, UsageError
from ..registry import gcstate
from ..registry.names import check_name
from ..registry.versions import Registry, VersionInfo
from ..timestamps import now_iso
from .lifecycle import delete_version

REGISTRY_PROJECT = "model-registry"
MAX_LINKED = 500


def _marker(source: VersionInfo, project: str, portfolio: str, version: int) -> str:
    return (f"projects/{source.project}/collections/{source.collection}/links/v{source.version}/"
            f"{project}/{portfolio}/v{version}")


def parse_target(registry: Registry, target_path: str, default_project: str) -> tuple[str, str]:
    """'{portfolio}', '{project}/{portfolio}', '{entity}/{project}/{portfolio}',
    'model-registry/{model}' -> (project, portfolio).  ValueError for another entity."""
    parts = target_path.strip().split("/")
    if len(parts) == 3:
        if parts[0] != registry.entity:
            raise UsageError(f"link target {target_path!r}: entity {parts[0]!r} is not this store's "
                             f"({registry.entity!r})")
        parts = parts[1:]
    if len(parts) == 1:
        project, portfolio = default_project, parts[0]
    elif len(parts) == 2:
        project, portfolio = parts
    else:
        raise UsageError(f"invalid link target {target_path!r}: use PORTFOLIO, PROJECT/PORTFOLIO, "
                         "ENTITY/PROJECT/PORTFOLIO or model-registry/MODEL")
    return check_name(project, "project"), check_name(portfolio, "portfolio name")


def source_of(registry: Registry, info: VersionInfo) -> VersionInfo:
    """The version a link points at (the version itself when it is not a link)."""
    if info.link is None:
        return info
    src = info.link
    return registry.version(src["project"], src["collection"], int(src["version"]))


def link(registry: Registry, source: VersionInfo, project: str, portfolio: str,
         aliases: list[str] | None = None) -> VersionInfo:
    """Link `source` into the portfolio; returns the link.  Linking the same source
    again returns its existing link (with the aliases added)."""
    source = source_of(registry, source)
    if source.deleted:
        raise NotFoundError(f"{source.name} was deleted")
    registry.ensure_collection(project, portfolio, source.type, portfolio=True)
    existing = next((v for v in members(registry, project, portfolio)
                     if v.link and (v.link["project"], v.link["collection"], int(v.link["version"]))
                     == (source.project, source.collection, source.version)), None)
    if existing is not None:
        n = existing.version
    else:
        record = {
            "format": "artifactfs-version-v1", "type": source.type, "root": source.root,
            "digest": source.digest, "size": source.size, "file_count": source.file_count,
            "created_at": now_iso(), "commit_hash": uuid.uuid4().hex[:20], "id": uuid.uuid4().hex,
            "base": None, "description": source.description, "metadata": source.metadata,
            "tags": [], "ttl": None, "run": source.run,
            "link": {"project": source.project, "collection": source.collection,
                     "version": source.version, "id": source.id},
        }
        with gcstate.in_flight(registry.store):  # the source's root must not be swept meanwhile
            if source.version in registry.deleted(source.project, source.collection):
                raise NotFoundError(f"{source.name} was deleted")
            n = registry.publish(project, portfolio, record)
        registry.store.put(_marker(source, project, portfolio, n), b"")
        registry.store.sync()
    for a in aliases or ():
        registry.set_alias(project, portfolio, a, n)
    return registry.version(project, portfolio, n)


def members(registry: Registry, project: str, portfolio: str) -> list[VersionInfo]:
    """The live links of a portfolio, in version order."""
    return registry.version_infos(project, portfolio)


def unlink(registry: Registry, info: VersionInfo) -> None:
    """Remove a link (its portfolio aliases go with it); ValueError for a non-link."""
    if info.link is None:
        raise UsageError(f"{info.project}/{info.name} is not a link (not a member of a portfolio)")
    delete_version(registry, info.project, info.collection, info.version, delete_aliases=True)
    src = info.link
    registry.store.delete(f"projects/{src['project']}/collections/{src['collection']}/links/"
                          f"v{src['version']}/{info.project}/{info.collection}/v{info.version}")


def linked(registry: Registry, source: VersionInfo) -> list[VersionInfo]:
    """The live links of a source version (at most MAX_LINKED); [] for a link."""
    if source.link is not None:
        return []
    prefix = f"projects/{source.project}/collections/{source.collection}/links/v{source.version}/"
    out = []
    for key in registry.store.list(prefix):
        project, portfolio, leaf = key[len(prefix):].split("/")
        try:
            info = registry.version(project, portfolio, int(leaf[1:]))
        except (NotFoundError, ValueError):
            continue
        if not info.deleted:
            out.append(info)
        if len(out) >= MAX_LINKED:
            break
    return out


def delete(registry: Registry, info: VersionInfo, delete_aliases: bool = False) -> None:
    """W&B delete(): a link removes only itself; a source also removes its links."""
    if info.link is not None:
        unlink(registry, info)
        return
    delete_version(registry, info.project, info.collection, info.version, delete_aliases)
    for member in linked(registry, info):
        try:
            unlink(registry, member)
        except ArtifactfsError:
            continue  # removed meanwhile
