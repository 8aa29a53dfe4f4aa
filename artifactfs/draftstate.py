"""The files around a draft's tree: where drafts live (one locked slot per mount),
draft.json (its base, type and attributes for the next commit), and the atomic
replace every bookkeeping file goes through."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import uuid
from dataclasses import dataclass, field

import xxhash

from .fileio import write_new
from .mount.state import state_dir

TMP = "\\tmp."
STATE_FILE = "draft.json"
DRAFT_FORMAT = "artifactfs-draft-v1"


def drafts_dir(store_url: str, project: str) -> str:
    """Where the drafts of one (store, project) live; store.json names the store for humans."""
    key = xxhash.xxh3_64_hexdigest(store_url.encode())
    path = os.path.join(state_dir(), "drafts", key, project)
    os.makedirs(path, mode=0o700, exist_ok=True)
    marker = os.path.join(os.path.dirname(path), "store.json")
    if not os.path.exists(marker):
        write_atomic(marker, json.dumps({"store": store_url}).encode())
    return path


def _lock_slot(path: str) -> int | None:
    """The flock of a slot, or None when a live mount holds it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(path, "\\lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def claim_drafts_dir(store_url: str, project: str) -> tuple[str, int]:
    """A slot of drafts for one process (a mount): the lowest one no live mount of the
    same store and project holds.  The flock dies with the process, so the next
    mount after a crash takes the slot over, drafts and all; drafts left in other
    free slots (two mounts that both died) are moved into it unless it has a draft
    of the same collection.  Returns the directory and the descriptor holding the lock."""
    base = drafts_dir(store_url, project)
    for slot in range(1000):
        path = os.path.join(base, str(slot))
        fd = _lock_slot(path)
        if fd is not None:
            _adopt(base, path)
            return path, fd
    raise OSError(errno.EBUSY, "too many mounts of this store and project")


def _adopt(base: str, mine: str) -> None:
    for other in sorted(os.listdir(base)):
        path = os.path.join(base, other)
        if path == mine or not other.isdigit():
            continue
        fd = _lock_slot(path)
        if fd is None:
            continue  # a live mount's
        try:
            for name in os.listdir(path):
                if os.path.exists(os.path.join(path, name, STATE_FILE)) and not os.path.exists(os.path.join(mine, name)):
                    os.rename(os.path.join(path, name), os.path.join(mine, name))
        finally:
            os.close(fd)


def write_atomic(path: str, data: bytes, fsync: bool = True) -> None:
    """Replace `path` with `data` all at once (temporary file, fsync unless told
    not to, rename): a killed process leaves the old or the new content."""
    tmp = os.path.join(os.path.dirname(path), f"{TMP}{uuid.uuid4().hex}")
    write_new(tmp, data, 0o600, fsync)
    os.replace(tmp, path)


@dataclass
class DraftState:
    """draft.json.  `advancing` is set while the tree is being moved to a new base
    (finished on the next load if the process died)."""

    collection: str
    project: str
    store: str
    type: str
    base: int | None = None
    base_root: str | None = None
    base_mtime_ns: int = 0
    attrs: dict = field(default_factory=dict)
    clean: dict = field(default_factory=dict)
    advancing: dict | None = None

    def to_json(self) -> bytes:
        return json.dumps({"format": DRAFT_FORMAT, **self.__dict__}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "DraftState":
        d = json.loads(data)
        if d.pop("format", None) != DRAFT_FORMAT:
            raise ValueError("not an artifactfs draft")
        return cls(**d)
