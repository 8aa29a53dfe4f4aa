"""Where artifactfs keeps per-user state on this machine (logs, drafts, control
sockets, mount records): one private directory, so that no layer below the
mount has to import the mount to find it."""
from __future__ import annotations

import os


def state_dir() -> str:
    """${XDG_STATE_HOME:-~/.local/state}/artifactfs, private to the user (0700)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    path = os.path.join(base, "artifactfs")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path
