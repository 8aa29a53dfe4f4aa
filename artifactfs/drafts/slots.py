"""Where drafts live on this machine, and which process may use them.

drafts/<store key>/<project>/<slot>/<collection>/ below the private state dir,
where <store key> is a hash of the store's identity (the random id in its
marker, docs/store-format.md 3.1): a store deleted and made again at the same
URL is another store, and its drafts start afresh.  A slot is held by one live
process (a mount) through an flock that dies with it; drafts left in other free
slots are adopted.  A draft that cannot continue (its base is gone, or it was
written by an older artifactfs) is set aside under
drafts/<store key>/<project>/set-aside/, its staged files exported as plain
files the user can find."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass

import xxhash

from ..fileio import write_new
from ..paths import state_dir
from .meta import DB_FILE
from .reserve import SpaceReserve

TMP = "\\tmp."
SET_ASIDE = "set-aside"
WHY_FILE = "\\why"  # in a set-aside draft: why it was set aside
OLD_STATE_FILE = "draft.json"  # drafts of artifactfs before inode-based drafts


def write_atomic(path: str, data: bytes, fsync: bool = True) -> None:
    """Replace `path` with `data` all at once (temporary file, fsync unless told
    not to, rename): a killed process leaves the old or the new content."""
    tmp = os.path.join(os.path.dirname(path), f"{TMP}{uuid.uuid4().hex}")
    write_new(tmp, data, 0o600, fsync)
    os.replace(tmp, path)


def drafts_dir(identity: str, url: str, project: str) -> str:
    """Where the drafts of one (store, project) live; store.json names the store for humans."""
    key = xxhash.xxh3_64_hexdigest(identity.encode())
    path = os.path.join(state_dir(), "drafts", key, project)
    os.makedirs(path, mode=0o700, exist_ok=True)
    marker = os.path.join(os.path.dirname(path), "store.json")
    if not os.path.exists(marker):
        write_atomic(marker, json.dumps({"store": url, "identity": identity}).encode())
    return path


def earlier_stores(identity: str, url: str) -> list[str]:
    """Drafts folders of other stores that were at the same URL (a store deleted
    and made again): their drafts stay there, for the user to find."""
    top = os.path.join(state_dir(), "drafts")
    out = []
    for key in sorted(os.listdir(top)):
        try:
            with open(os.path.join(top, key, "store.json"), "rb") as f:
                found = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if found.get("store") == url and found.get("identity", url) != identity:
            out.append(os.path.join(top, key))
    return out


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


def is_draft(path: str) -> bool:
    return os.path.exists(os.path.join(path, DB_FILE)) or os.path.exists(os.path.join(path, OLD_STATE_FILE))


def claim_drafts_dir(identity: str, url: str, project: str) -> tuple[str, int]:
    """A slot of drafts for one process (a mount): the lowest one no live mount of the
    same store and project holds.  The flock dies with the process, so the next
    mount after a crash takes the slot over, drafts and all; drafts left in other
    free slots (two mounts that both died) are moved into it unless it has a draft
    of the same collection.  Returns the directory and the descriptor holding the lock."""
    base = drafts_dir(identity, url, project)
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
                if is_draft(os.path.join(path, name)) and not os.path.exists(os.path.join(mine, name)):
                    os.rename(os.path.join(path, name), os.path.join(mine, name))
            SpaceReserve(path).release()  # (an idle slot holds no room back)
        finally:
            os.close(fd)


def set_aside(path: str) -> str:
    """Move the draft folder `path` out of its slot, to set-aside/<name>-<time>
    next to the slots; returns where it went."""
    slot_dir = os.path.dirname(path)
    where = os.path.join(os.path.dirname(slot_dir), SET_ASIDE)
    os.makedirs(where, mode=0o700, exist_ok=True)
    target = os.path.join(where, f"{os.path.basename(path)}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}")
    os.rename(path, target)
    return target


@dataclass(frozen=True)
class SetAside:
    collection: str
    path: str  # the set-aside folder; its staged files are under files/
    why: str


def set_aside_drafts(slot_dir: str, collections: list[str] | None = None) -> list[SetAside]:
    """The drafts set aside next to the drafts slot `slot_dir` (of `collections`,
    or all) that hold files, oldest first: they stay until the user removes them."""
    top = os.path.join(os.path.dirname(slot_dir), SET_ASIDE)
    try:
        names = os.listdir(top)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        collection = name.rsplit("-", 2)[0]
        if (name.startswith(TMP) or (collections is not None and collection not in collections)
                or not any(_listed(os.path.join(top, name, d)) for d in ("files", "tree"))):
            continue
        try:
            with open(os.path.join(top, name, WHY_FILE), "rb") as f:
                why = f.read().decode(errors="replace")
        except OSError:
            why = "set aside by an earlier artifactfs"
        out.append(SetAside(collection, os.path.join(top, name), why))
    return sorted(out, key=lambda a: (a.path.rsplit("-", 2)[-2], a.path))


def _listed(path: str) -> bool:
    """A folder with something in it."""
    try:
        return bool(os.listdir(path))
    except OSError:
        return False
