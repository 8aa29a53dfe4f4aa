"""Files of a draft open for writing, and what a commit does about them.

A draft file is *being written* while a handle opened for writing is open on
its inode and its bytes changed (created, truncated, written, also by the
writeback of a shared mmap) since that handle was opened (DraftHandle in
draftnodes.py).  `sync` and umount's commit wait for such files to be closed
before they publish the draft (control.py), and the daemon leaves a draft with
such files unpublished, marked recovered, as it stops (livedraft.py).  A file
opened for writing that has not changed since it was opened is published as it
is; an inode without names (unlinked while open) is in no version and holds
nothing back.

Each draft keeps its handles open for writing by weak reference
(LiveDraft.opened): a handle is known from its creation, inside the change that
creates its file (so a commit, which waits for changes in flight, never misses
a file created in a reader thread whose handle is not registered yet), until it
is freed once released, in whichever thread RELEASE is answered."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..drafts.inode import Inode
from ..errors import ArtifactfsError

CHECK_IT = "check it, then `artifactfs sync` it, or `artifactfs discard` it"


@dataclass
class OpenWrites:
    """Files of a draft open for writing now (draftroot.py looks at the open handles)."""

    changed: list[Inode] = field(default_factory=list)    # changed since opened: a commit waits for them
    unchanged: list[Inode] = field(default_factory=list)  # not changed since opened: published as they are


class BeingWritten(ArtifactfsError):
    """A commit found files of the draft being written (control.py waits and tries again)."""


def stopped_note(paths: list[str], umount: bool) -> str:
    """Why a draft was left unpublished as its daemon stopped with files of it being written."""
    how = "by `artifactfs umount`" if umount else "(SIGTERM, systemctl stop)"
    return (f"it was left unpublished when the mount was stopped {how} while {len(paths)} file(s) of it were "
            f"still open for writing ({shown_paths(paths)}), so one may be incomplete: {CHECK_IT}")


def shown_paths(paths: list[str], most: int = 5) -> str:
    more = f" (+{len(paths) - most} more)" if len(paths) > most else ""
    return ", ".join(paths[:most]) + more
