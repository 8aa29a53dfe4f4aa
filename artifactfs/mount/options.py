"""The options of one mount, passed from `artifactfs mount` to the daemon as JSON.
Kept apart from the daemon so the command does not import pyfuse3 and trio."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

DEFAULT_MEMORY = 256 * 1024 * 1024
DEFAULT_INODE_LIMIT = 100_000  # live inodes before the coldest version folders are forgotten (evict.py)
DEFAULT_THREADS = 16  # worker threads for blocking calls: store, cache, drafts (threads.py)


@dataclass
class MountOptions:
    mountpoint: str
    store: str
    project: str
    cache_dir: str
    cache_size: int
    refresh: float = 5.0
    memory: int = DEFAULT_MEMORY
    inode_limit: int = DEFAULT_INODE_LIMIT
    threads: int = DEFAULT_THREADS
    foreground: bool = False
    allow_other: bool = False
    read_only: bool = False
    debug: bool = False
    default_type: str = "dataset"  # of collections made with mkdir (drafts)
    send_opens: bool = False  # every OPEN/RELEASE answered by Python (noopen.OpenMode.PYTHON)
    no_opens: bool = False  # no OPEN/RELEASE requests at all, where pyfuse3 allows it (noopen.OpenMode.NONE)
    native_reads: bool = True  # READs of small version files answered by pyfuse3's native threads (nativereads.py)

    def fuse_options(self) -> set[str]:
        opts = {"fsname=artifactfs", "subtype=artifactfs", "default_permissions"}
        if self.read_only:
            opts.add("ro")
        if self.allow_other:
            opts.add("allow_other")
        return opts

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "MountOptions":
        return cls(**json.loads(text))
