"""`gc`: expired versions, unreferenced objects, dry runs, and gc racing commits on
the local store and on S3 (a real moto server) (docs/store-format.md 5.5)."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from core_util import check_version_complete, write_files
from mountutil import wait_for
from s3server import s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs import Api, Artifact, NotFoundError
from artifactfs.api.gc import GcReport, collect
from artifactfs.api.lifecycle import set_default_ttl
from artifactfs.errors import StoreError
from artifactfs.registry import gcstate
from artifactfs.registry.gcstate import ObjectsSwept
from artifactfs.registry.keys import tree_object_key
from artifactfs.registry.manifest import walk
from artifactfs.registry.versions import Registry
from artifactfs.store.local import TEMPORARY


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch) -> str:
    url = str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3_url")
    monkeypatch.setenv("ARTIFACTFS_STORE", url)
    monkeypatch.setenv("ARTIFACTFS_PROJECT", "proj")
    return url


def put(store: str, name: str, src: str, files: dict) -> Artifact:
    art = Artifact(name, "dataset", store=store)
    art.add_dir(write_files(src, files))
    return art.save()


def blobs_of(reg: Registry, art: Artifact) -> set[str]:
    """Store keys of the version's blobs and packs (S3 packs small files)."""
    info = reg.version(art.project, art.collection, int(art.version[1:]))
    return {k for _, e in walk(reg, info.root) for k in e.object_keys()}


def freed(report: GcReport) -> int:
    """Blobs and packs removed (or that would be)."""
    return report.blobs + report.packs


def test_gc_frees_only_what_nothing_live_uses(store, tmp_path):
    keep = put(store, "d", str(tmp_path / "a"), {"shared": "same", "only0": "zero"})
    gone = put(store, "d", str(tmp_path / "b"), {"shared": "same", "only1": "one" * 1000})
    reg = Registry.open(store)
    only1 = blobs_of(reg, gone) - blobs_of(reg, keep)
    gone.delete()
    dry = collect(reg, dry_run=True, grace=0, keep_deleted=0)
    assert (freed(dry), dry.dry_run) == (1, True) and dry.trees >= 1 and dry.bytes >= 3000
    assert reg.store.present(only1) == only1  # a dry run changes nothing
    kept = collect(reg, grace=0, keep_deleted=3600)
    assert freed(kept) == 0  # deleted a moment ago: its files are kept for open readers
    done = collect(reg, grace=0, keep_deleted=0)
    assert (freed(done), done.trees, done.bytes) == (freed(dry), dry.trees, dry.bytes)
    assert reg.store.present(only1) == set()
    assert check_version_complete(Registry.open(store), "proj", "d", 0) == 2
    assert freed(collect(reg, grace=0, keep_deleted=0)) == 0
    young = put(store, "e", str(tmp_path / "c"), {"x": "fresh"})
    young.delete()
    report = collect(reg, grace=3600, keep_deleted=0)
    assert freed(report) == 0 and report.young >= 2  # the grace period protects new objects


def test_gc_deletes_expired_versions(store, tmp_path):
    old = put(store, "d", str(tmp_path / "a"), {"f": "0"})
    put(store, "d", str(tmp_path / "b"), {"f": "1"})
    reg = Registry.open(store)
    art = Api(store).artifact("d:v0")
    art.ttl = dt.timedelta(seconds=1)
    art.save()
    never = Api(store).artifact("d:v1")
    never.ttl = None  # opts out of the project default below
    never.save()
    set_default_ttl(reg, "proj", 1)
    expiry = dt.datetime.fromisoformat(old.created_at) + dt.timedelta(seconds=1)
    wait_for(lambda: dt.datetime.now(dt.timezone.utc) > expiry, 10, "v0 to expire")
    assert collect(reg, dry_run=True).expired == ["proj/d:v0"]
    assert Api(store).artifact("d:v0").state == "COMMITTED"
    assert collect(reg).expired == ["proj/d:v0"]
    with pytest.raises(NotFoundError):
        Api(store).artifact("d:v0")
    assert Api(store).artifact("d:v1").state == "COMMITTED"


def test_commit_after_a_sweep_stores_swept_files_again(store, tmp_path):
    """The race made certain: a writer finds a blob present and skips it, gc then
    removes it (unreferenced), and the commit must not name a missing blob."""
    first = put(store, "d", str(tmp_path / "a"), {"f": "payload" * 100})
    first.delete()
    writer = Artifact("d", "dataset", store=store)
    writer.add_dir(write_files(str(tmp_path / "b"), {"f": "payload" * 100}))  # blob exists: not written
    reg = Registry.open(store)
    # ... and now it is gone; on S3 the file was packed again, and that new pack (not
    # yet named by a version) goes too: the commit must store the file once more
    assert freed(collect(reg, grace=0, keep_deleted=0)) == (2 if store.startswith("s3://") else 1)
    writer.save()
    assert check_version_complete(Registry.open(store), "proj", "d", 1) == 1


def test_gc_waits_for_a_commit_in_flight(store, tmp_path):
    gone = put(store, "d", str(tmp_path / "a"), {"f": "old"})
    reg = Registry.open(store)
    blobs = blobs_of(reg, gone)
    gone.delete()
    done = threading.Event()
    with gcstate.in_flight(reg.store):
        t = threading.Thread(target=lambda: (collect(Registry.open(store), grace=0, keep_deleted=0), done.set()))
        t.start()
        wait_for(lambda: gcstate.read_state(reg.store).sweeping(), 60, "gc to start its sweep")
        assert not done.is_set() and reg.store.present(blobs) == blobs  # nothing removed while we commit
    t.join(120)
    assert done.is_set() and reg.store.present(blobs) == set()
    assert not gcstate.read_state(reg.store).sweeping()


def test_gc_does_not_wait_for_the_marker_of_a_commit_whose_process_died(store, tmp_path):
    """A commit killed between its in-flight marker and its record (kill -9 of a
    mount during sync) made every gc wait 600 s, and every commit meanwhile wait
    for that gc, for an hour.  A marker whose process has exited on this machine
    (same boot and pid namespace) is now not waited for and is removed; one of a
    live process still is."""
    reg = Registry.open(store, create=True)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = {**gcstate._process(), "pid": child.pid, "started_at": time.time()}
    reg.store.put_visible(f"{gcstate.INFLIGHT}dead.json", json.dumps(dead).encode())
    sweep = gcstate.begin_sweep(reg.store)
    gcstate.wait_for_commits(reg.store, sweep, timeout=5)  # (StoreError after 5 s before)
    live = {**dead, "pid": os.getpid()}
    reg.store.put_visible(f"{gcstate.INFLIGHT}live.json", json.dumps(live).encode())
    with pytest.raises(StoreError, match="1 commit"):
        gcstate.wait_for_commits(reg.store, sweep, timeout=1)
    gcstate.end_sweep(reg.store, sweep)
    gcstate.drop_stale_markers(reg.store, time.time())
    assert sorted(reg.store.list(gcstate.INFLIGHT)) == [f"{gcstate.INFLIGHT}live.json"]


def test_gc_racing_commits_never_removes_what_a_version_needs(store, tmp_path):
    """Writers commit versions made of files that were deleted a moment ago (present,
    unreferenced: what gc removes), and delete them again, while gc runs in a loop
    with no grace period.  Afterwards every live version must be complete."""
    writers, rounds = 3, 6
    errors: list[BaseException] = []
    stop = threading.Event()
    sweeps = []
    first_sweep = threading.Event()  # writers start once gc is looping, so the two overlap
    retried: list[int] = []  # commits refused (ObjectsSwept): refused, never published broken

    def write(w: int) -> None:
        try:
            assert first_sweep.wait(300), "gc never ran"
            for r in range(rounds):
                files = {"shared.bin": "shared" * 500, f"w{w}.bin": f"{w}" * 2000, "r.txt": f"{w}-{r}"}
                for attempt in range(20):  # gc with no grace period may sweep a fresh upload
                    try:
                        art = put(store, f"c{w}", str(tmp_path / f"w{w}-{r}-{attempt}"), files)
                        break
                    except ObjectsSwept:
                        retried.append(w)
                else:
                    raise AssertionError("a writer never got its commit through")
                if r < rounds - 1:
                    art.delete()  # garbage for gc; the next round needs the same blobs again
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    def sweep() -> None:
        reg = Registry.open(store)
        while not stop.is_set() or len(sweeps) < 2:
            try:
                sweeps.append(collect(reg, grace=0, keep_deleted=0))
                first_sweep.set()
                stop.wait(0.05)  # pacing: commits get in between sweeps
            except BaseException as e:
                errors.append(e)
                return

    Registry.open(store, create=True)
    gc_thread = threading.Thread(target=sweep)
    gc_thread.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    stop.set()
    gc_thread.join(600)
    assert not errors, errors
    print(f"{len(sweeps)} sweeps, {len(retried)} commits refused and retried")
    reg = Registry.open(store)
    for w in range(writers):
        assert reg.versions("proj", f"c{w}") == [rounds - 1]
        assert check_version_complete(reg, "proj", f"c{w}", rounds - 1) == 3
    sweeps.append(collect(reg, grace=0, keep_deleted=0))
    assert len(sweeps) >= 3 and sum(freed(s) for s in sweeps) >= writers * (rounds - 1)  # every r.txt of a deleted round
    for w in range(writers):
        assert check_version_complete(Registry.open(store), "proj", f"c{w}", rounds - 1) == 3


def test_pinned_roots_survive_until_the_pin_goes(store, tmp_path):
    art = put(store, "d", str(tmp_path / "a"), {"f": "pinned"})
    reg = Registry.open(store)
    blobs = blobs_of(reg, art)
    root = reg.version("proj", "d", 0).root
    gcstate.write_pin(reg.store, "a-mount", {root})
    art.delete()
    assert freed(collect(reg, grace=0, keep_deleted=0)) == 0
    assert reg.store.present(blobs) == blobs
    gcstate.drop_pin(reg.store, "a-mount")
    assert freed(collect(reg, grace=0, keep_deleted=0)) == 1


def test_gc_removes_temporaries_of_writes_killed_midway(tmp_path):
    """A put or commit killed mid-write leaves its temporary file (local store);
    gc removes those older than the grace period and keeps a write in progress."""
    store = str(tmp_path / "store")
    art = put(store, "d", str(tmp_path / "a"), {"x": "one"})
    blob_dir = os.path.dirname(Registry.open(store).store.local_path(sorted(blobs_of(Registry.open(store), art))[0]))
    old = [os.path.join(store, TEMPORARY + "killed-put"), os.path.join(blob_dir, TEMPORARY + "killed-commit")]
    fresh = os.path.join(store, TEMPORARY + "in-progress")
    for path in old + [fresh]:
        with open(path, "wb") as f:
            f.write(b"partial")
    for path in old:
        past = os.stat(path).st_mtime - 7200  # two hours old: beyond the grace period
        os.utime(path, (past, past))
    out = subprocess.run([sys.executable, "-m", "artifactfs", "--store", store, "gc", "--grace", "1h"],
                         capture_output=True, text=True, check=True).stdout
    assert "removed 2 temporary files of writes that never finished" in out
    assert [os.path.exists(p) for p in old + [fresh]] == [False, False, True]
    assert check_version_complete(Registry.open(store), art.project, "d", 0) == 1
    subprocess.run([sys.executable, "-m", "artifactfs", "--store", store, "gc", "--grace", "0"],
                   capture_output=True, text=True, check=True)
    assert os.path.exists(fresh), "--grace 0 keeps the temporary files of writes that may be in progress"


def test_a_gc_after_keep_deleted_0_does_not_report_the_swept_trees_as_missing(store, tmp_path, caplog):
    """After `gc --keep-deleted 0`, the deleted version's trees are gone, and it is
    within a later gc's default --keep-deleted (1 day) again: a healthy store, not a
    damaged one.  Before, every later gc warned `tree <key> is missing`."""
    put(store, "d", str(tmp_path / "a"), {"shared": "same"})
    gone = put(store, "d", str(tmp_path / "b"), {"shared": "same", "sub/only1": "one"})
    reg = Registry.open(store)
    root = reg.version("proj", "d", 1).root
    gone.delete()
    collect(reg, grace=0, keep_deleted=0)
    assert not reg.store.exists(tree_object_key(root))
    caplog.set_level("WARNING", logger="artifactfs.gc")
    collect(Registry.open(store), grace=0)
    collect(Registry.open(store), dry_run=True, grace=0)
    assert [r.getMessage() for r in caplog.records if r.name == "artifactfs.gc"] == []
    assert check_version_complete(Registry.open(store), "proj", "d", 0) == 1
    # a tree missing below a live version is still reported
    live_root = reg.version("proj", "d", 0).root
    reg.store.delete(tree_object_key(live_root))
    collect(Registry.open(store), dry_run=True, grace=0)
    assert [r.getMessage() for r in caplog.records] == [f"tree {live_root} is missing"]
