"""Inside the mount, the order of modules that artifactfs/mount/__init__.py lists
is the order of imports: each module imports only modules listed before it
(module-level, function-level and TYPE_CHECKING imports alike; test_layers.py
parses them).  A module missing from that list fails too, so the list stays the
map of the package."""
from __future__ import annotations

import artifactfs.mount
from test_layers import GRAPH

MOUNT = "artifactfs.mount"


def _order() -> list[str]:
    """The module names listed in the package docstring, in order."""
    listing = artifactfs.mount.__doc__.split("Modules, each importing only those listed before it:")[1]
    return [line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line.split()]


ORDER = _order()


def test_every_mount_module_is_listed_once():
    modules = {m.removeprefix(MOUNT + ".") for m in GRAPH if m.startswith(MOUNT + ".")}
    assert len(ORDER) == len(set(ORDER))
    assert set(ORDER) == modules


def test_mount_modules_import_only_those_listed_before_them():
    upward = {}
    for i, name in enumerate(ORDER):
        above = {f"{MOUNT}.{m}" for m in ORDER[i:]}
        if bad := sorted(GRAPH[f"{MOUNT}.{name}"] & above):
            upward[name] = bad
    assert not upward, f"imports of modules listed later in artifactfs/mount/__init__.py: {upward}"
