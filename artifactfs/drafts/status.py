"""What `artifactfs sync` would publish from a draft now (`artifactfs status`):
its changes as a commit finds them (commit.draft_changes), with nothing stored,
in the manner of `git status --short`.  Staged files whose digests were taken
while they were written, or at the last commit, are not read; others are read
and hashed, so that a file written back with the bytes it had is no change."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..registry.manifest import DirEntry, Entry, Folder
from ..registry.versions import Registry
from .commit import base_behind, draft_changes, left_out_text
from .engine import ROOT, Draft
from .inode import Inode


@dataclass
class Changed:
    kind: str  # "A" added, "M" changed (content, executable bit, mtime, a symlink's target), "D" removed
    path: str  # below the draft; a folder's with a trailing "/" (moved or copied in as a whole, or empty)


@dataclass
class DraftStatus:
    collection: str
    base: int | None                 # the version the draft shows changes to (None: a new collection)
    latest: int | None
    changes: list[Changed] = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # aliases, tags, description, metadata for the next commit
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def text(self) -> str:
        """The status as lines: a heading, one line per change, then what is pending and left out."""
        name, n = self.collection, len(self.changes)
        where = f"draft of {name}:v{self.base}" if self.base is not None else "a new collection"
        if base_behind(self.base, self.latest):
            left = ("no version is left" if self.latest is None
                    else f"latest is {name}:v{self.latest}, which `artifactfs discard` would show instead")
            where += f", since deleted ({left}); sync publishes everything the draft shows as a new version"
        elif self.latest is not None and self.latest != self.base:
            where += f"; latest is {name}:v{self.latest}, sync applies the changes onto it"
        head = f"{name}: {where}: " + (f"{n} change{'s' * (n != 1)}" if n else "no changes")
        lines = [head, *(f"{c.kind} {c.path}" for c in self.changes)]
        if self.pending:
            pending = (f"{key} {_shown(value)}" for key, value in sorted(self.pending.items()))
            lines.append("for the next version: " + "; ".join(pending))
        if self.left_out:
            lines.append(left_out_text(self.left_out))
        return "\n".join(lines)


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def draft_status(registry: Registry, draft: Draft) -> DraftStatus:
    """The draft's changes relative to its base, and its collection's latest version."""
    st = draft.state
    found, _ = draft_changes(None, draft)
    out = DraftStatus(st.collection, st.base, registry.latest(st.project, st.collection),
                      pending=dict(st.attrs), left_out=found.left_out)
    for path, change in sorted(found.changes.items()):
        was = _in_base(draft, path)
        if isinstance(change, Folder) and isinstance(was, DirEntry):
            continue  # a folder emptied: its removals say it
        slash = "/" if isinstance(change, (DirEntry, Folder)) else ""
        kind = "D" if change is None else "M" if was is not None else "A"
        out.changes.append(Changed(kind, path + slash))
    return out


def _in_base(draft: Draft, path: str) -> Entry | None:
    """The base's entry at `path`, or None."""
    tree = draft.io.load(draft.state.base_root) if draft.state.base_root else {}
    *folders, name = path.split("/")
    for part in folders:
        e = tree.get(part)
        if not isinstance(e, DirEntry):
            return None
        tree = draft.io.load(e.tree)
    return tree.get(name)


def paths_of(draft: Draft, inodes: list[Inode]) -> list[str]:
    """One current path of each inode (the first name found of a hard link; a
    file renamed shows its new name), sorted; inodes without a name are left out."""
    out = set()
    for ino in inodes:
        parts: list[str] = []
        node: Inode | None = ino
        while node is not None and node.id != ROOT:
            if node.id:
                found = draft.db.parent_of(node.id)
                if found is None:
                    break
                parts.append(found[1])
                node = draft.load(found[0]) if found[0] != ROOT else None
            else:  # virtual: known by its folder and name
                parts.append(node.name)
                node = node.parent
        else:
            out.add("/".join(reversed(parts)))
    return sorted(out)
