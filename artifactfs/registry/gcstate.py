"""The handshake that lets `gc` sweep a store while other processes commit to it
(docs/store-format.md section 5.5).

  gc/state.json        {"generation": G, "sweep": null | {"id", "host", "pid", "heartbeat"}}  (CAS)
  inflight/<id>.json   one per commit between its last object check and its record
  pins/<id>.json       {"host", "pid", "heartbeat", "roots": [...]}: trees a running mount's
                       drafts are based on, kept while the heartbeat is fresh

A commit writes its in-flight marker, then reads gc/state.json.  If a sweep is
live it removes its marker, waits for the sweep to end and starts over.  gc
first publishes its sweep (generation + 1), then waits until every in-flight
marker it lists is gone, and only then lists the versions and deletes.  So a
commit either finished before gc listed the versions, or starts its checks after
the sweep: and if a sweep ran since the commit's writer read the generation
(`epoch`), the commit checks that every object its new root needs is still
there (ObjectsSwept otherwise; the writer puts them again and retries)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ArtifactfsError, ObjectNotFound, PreconditionFailed, StoreError
from ..store import ObjectStore
from .keys import tree_object_key
from .manifest import DirEntry, FileEntry, TreeIO

log = logging.getLogger("artifactfs.registry")
STATE = "gc/state.json"
INFLIGHT = "inflight/"
PINS = "pins/"
PIN_STALE = 3600.0       # a pin not refreshed for this long belongs to a mount that is gone
SWEEP_STALE = 300.0      # a sweep whose heartbeat is older is dead (its gc crashed)
INFLIGHT_STALE = 3600.0  # a marker older than this belongs to a crashed commit
WAIT = 900.0             # how long a commit waits for a sweep to end
POLL = 0.05


class ObjectsSwept(ArtifactfsError):
    """A gc that ran during this commit removed objects its new root needs."""

    def __init__(self, blobs: set[str], trees: set[str]):
        super().__init__(f"a concurrent gc removed {len(blobs)} blob(s) and {len(trees)} tree(s) this "
                         "commit needs; commit again (the files are stored again)")
        self.blobs, self.trees = blobs, trees


@dataclass
class GcState:
    generation: int
    sweep: dict | None
    etag: str | None

    def sweeping(self, now: float | None = None) -> bool:
        """A sweep is live (its heartbeat is recent)."""
        if self.sweep is None:
            return False
        return (time.time() if now is None else now) - float(self.sweep.get("heartbeat", 0)) < SWEEP_STALE


def read_state(store: ObjectStore) -> GcState:
    try:
        data, etag = store.get_versioned(STATE)
    except ObjectNotFound:
        return GcState(0, None, None)
    d = json.loads(data)
    return GcState(int(d.get("generation", 0)), d.get("sweep"), etag)


def epoch(store: ObjectStore) -> int:
    """The generation a writer notes before its first object check (-1 during a sweep:
    every later commit then checks its objects)."""
    st = read_state(store)
    return -1 if st.sweeping() else st.generation


@contextlib.contextmanager
def in_flight(store: ObjectStore) -> Iterator[int]:
    """Hold an in-flight marker while no sweep is live; yields the generation."""
    deadline = time.monotonic() + WAIT
    while True:
        key = f"{INFLIGHT}{uuid.uuid4().hex}.json"
        store.put_visible(key, json.dumps({**_process(), "started_at": time.time()}).encode())
        st = read_state(store)
        if not st.sweeping():
            break
        store.delete(key)
        log.warning("waiting up to %.0f s for the gc sweeping %s (host %s, pid %s) to end", WAIT, store.url,
                    st.sweep.get("host") if st.sweep else "?", st.sweep.get("pid") if st.sweep else "?")
        while read_state(store).sweeping():
            if time.monotonic() > deadline:
                raise StoreError(f"a gc has been sweeping {store.url} for over {WAIT:.0f} s; commit again later")
            time.sleep(POLL)
    try:
        yield st.generation
    finally:
        store.delete(key)


def check_present(io: TreeIO, store: ObjectStore, root: str, base_root: str | None) -> None:
    """Raise ObjectsSwept unless every tree, blob and pack of `root` is in the store.  Sub-trees
    equal to the same path's in `base_root` (a version that is not deleted, which gc
    keeps) are not descended into."""
    trees: set[str] = set()
    objects: set[str] = set()  # store keys of blobs and packs

    def visit(key: str, base: str | None) -> None:
        if key == base:
            return
        trees.add(key)
        old = io.load(base) if base else {}
        for name, entry in io.load(key).items():
            was = old.get(name)
            if isinstance(entry, DirEntry):
                visit(entry.tree, was.tree if isinstance(was, DirEntry) else None)
            elif isinstance(entry, FileEntry) and not (isinstance(was, FileEntry)
                                                       and was.object_keys() == entry.object_keys()):
                objects.update(entry.object_keys())
    visit(root, base_root)
    present = store.present({tree_object_key(t) for t in trees} | objects)
    missing_trees = {t for t in trees if tree_object_key(t) not in present}
    missing_blobs = {k.rpartition("/")[2] for k in objects if k not in present}
    if missing_trees or missing_blobs:
        raise ObjectsSwept(missing_blobs, missing_trees)


# -- pins ---------------------------------------------------------------------------------
def write_pin(store: ObjectStore, pin_id: str, roots: set[str]) -> None:
    """Keep these root trees (and all below them) through gc while refreshed."""
    store.put(f"{PINS}{pin_id}.json", json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                  "heartbeat": time.time(), "roots": sorted(roots)}).encode())
    store.sync()


def drop_pin(store: ObjectStore, pin_id: str) -> None:
    store.delete(f"{PINS}{pin_id}.json")


def pinned_roots(store: ObjectStore, now: float) -> set[str]:
    """Roots of every pin refreshed within PIN_STALE."""
    out: set[str] = set()
    for key in store.list(PINS):
        try:
            d = json.loads(store.get(key))
        except (ObjectNotFound, ValueError):
            continue
        if now - float(d.get("heartbeat", 0)) < PIN_STALE:
            out.update(str(r) for r in d.get("roots", ()))
    return out


# -- the gc side ----------------------------------------------------------------------------
def _change(store: ObjectStore, fn: Any) -> GcState:
    """Read-modify-CAS gc/state.json with fn(state) -> new body dict."""
    for attempt in range(200):
        st = read_state(store)
        body = fn(st)
        try:
            etag = store.compare_and_swap(STATE, json.dumps(body, sort_keys=True).encode(), st.etag)
            return GcState(body["generation"], body["sweep"], etag)
        except PreconditionFailed:
            time.sleep(min(0.001 * 2 ** min(attempt, 6), 0.05))
    raise StoreError(f"could not update {STATE}: too much contention")


def begin_sweep(store: ObjectStore) -> str:
    """Publish a live sweep (generation + 1); returns its id.  StoreError while another
    gc's sweep is live."""
    sweep_id = uuid.uuid4().hex

    def start(st: GcState) -> dict:
        if st.sweeping():
            raise StoreError(f"another gc is sweeping this store (host {st.sweep.get('host')}, "
                             f"pid {st.sweep.get('pid')}); try again when it ends")
        return {"generation": st.generation + 1,
                "sweep": {"id": sweep_id, "host": socket.gethostname(), "pid": os.getpid(),
                          "heartbeat": time.time()}}
    _change(store, start)
    return sweep_id


def heartbeat(store: ObjectStore, sweep_id: str) -> None:
    """Keep our sweep live; StoreError if it is no longer ours (it went stale)."""
    def beat(st: GcState) -> dict:
        if st.sweep is None or st.sweep.get("id") != sweep_id:
            raise StoreError("this gc's sweep was taken over (its heartbeat went stale); nothing more is deleted")
        return {"generation": st.generation, "sweep": {**st.sweep, "heartbeat": time.time()}}
    _change(store, beat)


def end_sweep(store: ObjectStore, sweep_id: str) -> None:
    def end(st: GcState) -> dict:
        mine = st.sweep is not None and st.sweep.get("id") == sweep_id
        return {"generation": st.generation, "sweep": None if mine else st.sweep}
    _change(store, end)


def _process() -> dict:
    """Who writes a marker: host and pid, and the boot and pid namespace that make
    the pid mean one process (another container on the host has its own)."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            me["boot"] = f.read().strip()
        me["pidns"] = os.stat("/proc/self/ns/pid").st_ino
    return me


def _dead(marker: dict) -> bool:
    """The marker's process has exited: it ran in this boot and pid namespace, and
    its pid is gone.  Markers of other machines, or older ones without boot and
    namespace, are never judged here (they go stale after INFLIGHT_STALE)."""
    here = _process()
    if "boot" not in here or any(marker.get(k) != here[k] for k in ("host", "boot", "pidns")):
        return False
    try:
        os.kill(int(marker["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError):
        return False
    return False


def _started(store: ObjectStore, key: str) -> float:
    """When an in-flight marker was written (0.0: gone, unreadable, or its process
    has exited: a commit killed between its marker and its record)."""
    try:
        marker = json.loads(store.get(key))
        return 0.0 if _dead(marker) else float(marker.get("started_at", 0))
    except (ObjectNotFound, ValueError, AttributeError):
        return 0.0


def drop_stale_markers(store: ObjectStore, now: float) -> None:
    """Remove the markers of commits that crashed long ago."""
    for key in list(store.list(INFLIGHT)):
        started = _started(store, key)
        if (started and now - started > INFLIGHT_STALE) or (not started and store.exists(key)):
            store.delete(key)


def wait_for_commits(store: ObjectStore, sweep_id: str, timeout: float) -> None:
    """Wait until every in-flight marker present now is gone (or stale)."""
    deadline = time.monotonic() + timeout
    waiting = set(store.list(INFLIGHT))
    last_beat = time.monotonic()
    while waiting:
        now = time.time()
        for key in list(waiting):
            started = _started(store, key)
            if started == 0.0 or now - started > INFLIGHT_STALE:
                waiting.discard(key)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise StoreError(f"{len(waiting)} commit(s) still in flight after {timeout:.0f} s; try gc again later")
        if time.monotonic() - last_beat > SWEEP_STALE / 5:
            heartbeat(store, sweep_id)
            last_beat = time.monotonic()
        time.sleep(POLL)
