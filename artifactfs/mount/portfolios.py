"""Portfolios, the model registry and deleted versions in the mount (issue 11).

  <p>/<p>:vN                     -> ../<c>/<c>:vM   a link of portfolio <p> to its source
                                                    (a folder when the source is in another project)
  model-registry/<m>/<m>:vN      -> ../../<c>/<c>:vM
  model-registry/<m>/<m>:<alias> -> <m>:vN

model-registry/ appears at the root once the registry (project `model-registry`)
has a model with a link into the mounted project; a collection of that name in
the project hides it.  Deleted versions leave the listings at the next refresh,
and their names are dropped from the kernel's dentry cache then; files already
open keep reading (their blobs stay until gc)."""
from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyfuse3

from ..api.links import REGISTRY_PROJECT
from ..errors import ArtifactfsError
from ..registry.versions import Registry
from .context import MountContext
from .inodes import Node, SymlinkNode, fuse_error

if TYPE_CHECKING:
    from .nodes import CollectionNode, CollectionState

REGISTRY_DIR = REGISTRY_PROJECT
log = logging.getLogger("artifactfs.mount")


def link_targets(registry: Registry, project: str, portfolio: str, versions: set[int],
                 known: dict[int, dict | None]) -> dict[int, tuple[str, str, int]]:
    """version -> (source project, collection, version) of a portfolio's links.  Link
    records never change: `known` keeps them across refreshes."""
    out = {}
    for n in versions:
        if n not in known:
            known[n] = registry.version(project, portfolio, n, aliases={}).link
        src = known[n]
        if src is not None:
            out[n] = (src["project"], src["collection"], int(src["version"]))
    return out


def portfolio_links(registry: Registry, project: str, portfolio: str, versions: set[int],
                    known: dict[int, dict | None], mounted: str, up: str = "../") -> dict[int, str]:
    """version -> symlink target, for the links whose source is in the `mounted` project;
    `up` leads from the portfolio's folder to the mount's root."""
    return {n: f"{up}{c}/{c}:v{m}" for n, (p, c, m) in link_targets(registry, project, portfolio, versions, known).items()
            if p == mounted}


def forget_removed(node: "CollectionNode", st: "CollectionState", separators: tuple[str, ...]) -> None:
    """Drop the kernel's dentries of versions that left the listing (deleted), in
    each spelling (`NAME:vN`, `NAME@vN`)."""
    seen: dict[str, set[int]] = node.ctx.keep(("listed",), dict)
    before = seen.get(node.name)
    seen[node.name] = st.versions
    if before is None or before is st.versions:
        return
    for n in before - st.versions:
        for sep in separators:
            try:
                pyfuse3.invalidate_entry_async(node.ino, f"{node.name}{sep}v{n}".encode())
            except (OSError, RuntimeError):
                pass  # the kernel never looked it up, or the session is ending


@dataclass
class ModelState:
    links: dict[int, str]       # version -> symlink target
    aliases: dict[str, int]


class ModelNode(Node):
    """model-registry/<m>/: links to versions of the mounted project, and aliases."""

    mode = stat.S_IFDIR | 0o555

    def __init__(self, ctx: MountContext, key: tuple[str, ...]):
        super().__init__(ctx, key)
        self.name = key[1]
        self.known: dict[int, dict | None] = ctx.keep(("mreg-known", self.name), dict)

    def _fetch(self) -> ModelState:
        reg = self.ctx.registry
        versions = set(reg.versions(REGISTRY_PROJECT, self.name))
        links = portfolio_links(reg, REGISTRY_PROJECT, self.name, versions, self.known, self.ctx.project, "../../")
        aliases = {a: n for a, n in reg.aliases(REGISTRY_PROJECT, self.name).items() if n in links}
        return ModelState(links, aliases)

    async def state(self) -> ModelState:
        from .nodes import Refreshing  # the read path's refresh policy
        refreshing = self.ctx.keep(("mreg-state", self.name), lambda: Refreshing(self._fetch))
        return await refreshing.get(self.ctx, self.ctx.refresh)

    def _entries(self, st: ModelState) -> dict[str, str]:
        out = {f"{self.name}:v{n}": t for n, t in st.links.items()}
        out.update({f"{self.name}:{a}": f"{self.name}:v{n}" for a, n in st.aliases.items()})
        return out

    async def lookup(self, name: str) -> Node:
        target = self._entries(await self.state()).get(name)
        if target is None:
            raise fuse_error(errno.ENOENT)
        return self.ctx.make("fixed-link", ("mreg", self.name, name), target)

    async def children(self) -> Sequence[tuple[str, Node]]:
        entries = self._entries(await self.state())
        return [(name, self.ctx.make("fixed-link", ("mreg", self.name, name), entries[name])) for name in sorted(entries)]


class RegistryNode(Node):
    """model-registry/: one folder per registered model with links into this project."""

    mode = stat.S_IFDIR | 0o555

    def _fetch(self) -> list[str]:
        reg = self.ctx.registry
        out = []
        for coll in reg.collections(REGISTRY_PROJECT):
            known: dict[int, dict | None] = self.ctx.keep(("mreg-known", coll.name), dict)
            versions = set(reg.versions(REGISTRY_PROJECT, coll.name))
            if portfolio_links(reg, REGISTRY_PROJECT, coll.name, versions, known, self.ctx.project):
                out.append(coll.name)
        return sorted(out)

    async def models(self) -> list[str]:
        from .nodes import Refreshing
        refreshing = self.ctx.keep(("mreg-models",), lambda: Refreshing(self._fetch))
        return await refreshing.get(self.ctx, self.ctx.refresh)

    async def lookup(self, name: str) -> Node:
        if name not in await self.models():
            raise fuse_error(errno.ENOENT)
        return self.ctx.make("model", ("mreg", name))

    async def children(self) -> Sequence[tuple[str, Node]]:
        return [(name, self.ctx.make("model", ("mreg", name))) for name in await self.models()]


async def registry_entry(ctx: MountContext, collections: dict) -> tuple[str, Node] | None:
    """('model-registry', node) for the root, when the registry has models to show."""
    if REGISTRY_DIR in collections:
        return None
    node = ctx.make("registry", ("mreg",))
    assert isinstance(node, RegistryNode)
    try:
        models = await node.models()
    except (ArtifactfsError, OSError) as e:  # the store is unreachable and the registry never seen
        log.warning("model-registry/ not shown: %s", e)
        return None
    return (REGISTRY_DIR, node) if models else None


NODE_CLASSES: dict[str, type[Node]] = {"fixed-link": SymlinkNode, "model": ModelNode, "registry": RegistryNode}
