"""Layer 7: the `artifactfs` command line and `mount.artifactfs`."""
from __future__ import annotations

import signal
import sys


def entry() -> None:
    """The `artifactfs` program.  `artifactfs sync`, which training loops run after
    each checkpoint, starts without importing the API (0.25 s instead of 0.55 s
    idle, and 1-2 s on a busy machine: most of a sync with no change);
    everything else runs the full command group (cli/main.py).

    Ctrl-C while those imports run (before click can turn it into one line, in
    cli/base.py's Group) ends as one during a command does: 'Error: interrupted'
    and exit 130 (128 + SIGINT, as shells report it), no traceback."""
    try:
        if sys.argv[1:2] == ["sync"]:
            from .base import Group
            from .drafts import sync_cmd
            Group(commands=[sync_cmd])(prog_name="artifactfs")
        else:
            from .main import main
            main()
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(128 + signal.SIGINT)
