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
from dataclasses import dataclass, field

from ..api.links import REGISTRY_PROJECT
from ..errors import ArtifactfsError
from ..registry.versions import Registry
from .context import MountContext
from .errnos import fuse_error
from .inodes import InodeTable, Key, Node, SymlinkNode
from .refreshing import Refreshing

REGISTRY_DIR = REGISTRY_PROJECT
log = logging.getLogger("artifactfs.mount")
LinkRecords = dict[int, dict | None]  # version -> its link record (None: not a link); records never change


def link_targets(registry: Registry, project: str, portfolio: str, versions: set[int],
                 known: LinkRecords) -> dict[int, tuple[str, str, int]]:
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
                    known: LinkRecords, mounted: str, up: str = "../") -> dict[int, str]:
    """version -> symlink target, for the links whose source is in the `mounted` project;
    `up` leads from the portfolio's folder to the mount's root."""
    return {n: f"{up}{c}/{c}:v{m}" for n, (p, c, m) in link_targets(registry, project, portfolio, versions, known).items()
            if p == mounted}


@dataclass
class ModelState:
    links: dict[int, str]       # version -> symlink target
    aliases: dict[str, int]


@dataclass
class RegistryKept:
    """What the mount keeps of model-registry/ beyond its nodes' lives (the kernel
    forgets nodes; listings seen last must survive, e.g. while the store is
    unreachable).  The root node owns it."""

    models: Refreshing[list[str]] | None = None  # the models with links into the mounted project
    known: dict[str, LinkRecords] = field(default_factory=dict)  # by model
    states: dict[str, Refreshing[ModelState]] = field(default_factory=dict)  # by model


class ModelNode(Node):
    """model-registry/<m>/: links to versions of the mounted project, and aliases."""

    mode = stat.S_IFDIR | 0o555

    def __init__(self, ctx: MountContext, key: Key, kept: RegistryKept):
        super().__init__(ctx, key)
        self.name = name = key[1]
        known = kept.known.setdefault(name, {})
        if name not in kept.states:
            kept.states[name] = Refreshing(lambda: _model_state(ctx.registry, name, known, ctx.project), ctx.threads)
        self._state = kept.states[name]

    async def state(self) -> ModelState:
        return await self._state.get(self.ctx.refresh)

    def _entries(self, st: ModelState) -> dict[str, str]:
        out = {f"{self.name}:v{n}": t for n, t in st.links.items()}
        out.update({f"{self.name}:{a}": f"{self.name}:v{n}" for a, n in st.aliases.items()})
        return out

    async def lookup(self, name: str) -> Node:
        target = self._entries(await self.state()).get(name)
        if target is None:
            raise fuse_error(errno.ENOENT)
        return self.table.make("fixed-link", ("mreg", self.name, name), target)

    async def children(self) -> Sequence[tuple[str, Node]]:
        entries = self._entries(await self.state())
        return [(name, self.table.make("fixed-link", ("mreg", self.name, name), entries[name]))
                for name in sorted(entries)]


class RegistryNode(Node):
    """model-registry/: one folder per registered model with links into this project."""

    mode = stat.S_IFDIR | 0o555

    def __init__(self, ctx: MountContext, key: Key, kept: RegistryKept):
        super().__init__(ctx, key)
        self.kept = kept
        if kept.models is None:
            kept.models = Refreshing(lambda: _models(ctx.registry, kept.known, ctx.project), ctx.threads)
        self._models = kept.models

    async def models(self) -> list[str]:
        return await self._models.get(self.ctx.refresh)

    def _model(self, name: str) -> Node:
        return self.table.make("model", ("mreg", name), self.kept)

    async def lookup(self, name: str) -> Node:
        if name not in await self.models():
            raise fuse_error(errno.ENOENT)
        return self._model(name)

    async def children(self) -> Sequence[tuple[str, Node]]:
        return [(name, self._model(name)) for name in await self.models()]


def _models(reg: Registry, known: dict[str, LinkRecords], mounted: str) -> list[str]:
    """Blocking: the registered models with a link into the `mounted` project."""
    out = []
    for coll in reg.collections(REGISTRY_PROJECT):
        versions = set(reg.versions(REGISTRY_PROJECT, coll.name))
        if portfolio_links(reg, REGISTRY_PROJECT, coll.name, versions, known.setdefault(coll.name, {}), mounted):
            out.append(coll.name)
    return sorted(out)


def _model_state(reg: Registry, name: str, known: LinkRecords, mounted: str) -> ModelState:
    """Blocking: a model's links into the `mounted` project, and its aliases of them."""
    versions = set(reg.versions(REGISTRY_PROJECT, name))
    links = portfolio_links(reg, REGISTRY_PROJECT, name, versions, known, mounted, "../../")
    aliases = {a: n for a, n in reg.aliases(REGISTRY_PROJECT, name).items() if n in links}
    return ModelState(links, aliases)


async def registry_entry(table: InodeTable, kept: RegistryKept, collections: dict) -> tuple[str, Node] | None:
    """('model-registry', node) for the root, when the registry has models to show."""
    if REGISTRY_DIR in collections:
        return None
    node = table.make("registry", ("mreg",), kept)
    assert isinstance(node, RegistryNode)
    try:
        models = await node.models()
    except (ArtifactfsError, OSError) as e:  # the store is unreachable and the registry never seen
        log.warning("model-registry/ not shown: %s", e)
        return None
    return (REGISTRY_DIR, node) if models else None


NODE_CLASSES: dict[str, type[Node]] = {"fixed-link": SymlinkNode, "model": ModelNode, "registry": RegistryNode}
