"""Several writer processes on one store: version allocation, compare-and-swap
of labels and attributes, and writers killed with SIGKILL mid-commit."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time

import xxhash
from core_util import check_version_complete, write_files
from mountutil import wait_for

from artifactfs import Api, Artifact
from artifactfs.registry.versions import Registry
from artifactfs.store.local import LocalStore

P = "proj"
CTX = mp.get_context("fork")  # children inherit the imported package: fast start


def run_all(target, args_list: list[tuple], timeout: float = 60) -> list:
    """Start one process per args tuple at the same moment; collect their results."""
    queue, barrier = CTX.Queue(), CTX.Barrier(len(args_list))
    procs = [CTX.Process(target=_wrap, args=(target, queue, barrier, i, a))
             for i, a in enumerate(args_list)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    return [r for _, r in sorted(results, key=lambda r: r[0])]


def _wrap(target, queue, barrier, index, args) -> None:
    try:
        barrier.wait()
        queue.put((index, target(*args)))
    except BaseException as e:  # report to the parent instead of dying silently
        queue.put(f"worker {index}: {type(e).__name__}: {e}")


def commit_many(store: str, tag: str, count: int, workdir: str) -> list[int]:
    got = []
    for i in range(count):
        src = write_files(os.path.join(workdir, f"{tag}-{i}"), {"who.txt": f"{tag} {i}"})
        art = Artifact("shared", "dataset", store=store)
        art.add_dir(src)
        art.save(P)
        got.append(int(art.version[1:]))
    return got


def test_two_writers_get_forty_consecutive_versions(store_url, tmp_path):
    results = run_all(commit_many, [(store_url, "A", 20, str(tmp_path)),
                                    (store_url, "B", 20, str(tmp_path))])
    a, b = results
    assert a == sorted(a) and b == sorted(b)
    assert sorted(a + b) == list(range(40))
    reg = Registry.open(store_url)
    assert reg.versions(P, "shared") == list(range(40))
    assert reg.aliases(P, "shared")["latest"] == 39
    last = Api(store_url, project=P).artifact("shared:latest")
    assert last.version == "v39" and "latest" in last.aliases
    who = {Api(store_url, project=P).artifact(f"shared:v{n}").files()[0].digest for n in range(40)}
    assert len(who) == 40  # every commit's content landed in its own version


def add_labels(store: str, prefix: str, count: int) -> None:
    art = Api(store, project=P).artifact("c:v0")
    for i in range(count):
        art.tags.append(f"{prefix}-tag{i}")
        art.aliases.append(f"{prefix}-alias{i}")
        art.metadata[f"{prefix}-key{i}"] = i
        art.save()


def test_concurrent_label_and_attribute_changes_lose_nothing(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    art = Artifact("c", "dataset", store=store_url, metadata={"keep": True})
    art.add_dir(src)
    art.save(P)
    run_all(add_labels, [(store_url, "p", 20), (store_url, "q", 20)])
    final = Api(store_url, project=P).artifact("c:v0")
    want = {f"{p}-tag{i}" for p in "pq" for i in range(20)}
    assert set(final.tags) == want
    assert set(final.aliases) == {f"{p}-alias{i}" for p in "pq" for i in range(20)} | {"latest"}
    assert final.metadata == {"keep": True, **{f"{p}-key{i}": i for p in "pq" for i in range(20)}}


def test_registry_tag_updates_are_compare_and_swap(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    art = Artifact("c", "dataset", store=store_url)
    art.add_dir(src)
    art.save(P)

    def add_tags(store: str, prefix: str) -> None:
        reg = Registry.open(store)
        for i in range(20):
            reg.update_attrs(P, "c", 0, lambda d, t=f"{prefix}{i}": d.update(tags=d["tags"] + [t]))
    run_all(add_tags, [(store_url, "x"), (store_url, "y")])
    tags = Registry.open(store_url).version(P, "c", 0).tags
    assert sorted(tags) == sorted([f"x{i}" for i in range(20)] + [f"y{i}" for i in range(20)])


# -- crash safety -----------------------------------------------------------------
def commit_forever(store: str, workdir: str, seed: int, commits: "mp.sharedctypes.Synchronized[int]") -> None:
    """Commit, forever, files drawn from a pool of large contents shared by rounds
    2k and 2k+1 (so a round reuses blobs that a killed writer may have been
    writing) plus one unique file, with an alias and a tag; count the commits
    made in `commits`."""
    rnd = random.Random(seed)
    pool = [random.Random(seed // 2 * 100 + n).randbytes(300_000 + 100_000 * n) for n in range(4)]
    i = 0
    while True:
        files = {f"d{j}/f{j}.bin": pool[(i + j) % len(pool)] for j in range(3)}
        files["unique.txt"] = f"{seed} {i} {rnd.random()}"
        src = write_files(os.path.join(workdir, f"{seed}-{i}"), files)
        art = Artifact("crashy", "dataset", store=store)
        art.add_dir(src)
        art.aliases.append(f"run{seed}")
        art.tags.append("t")
        art.save(P)
        i += 1
        commits.value = i


def check_objects_whole(store: LocalStore) -> None:
    """Every blob and tree key, referenced or orphan, holds exactly the bytes it names."""
    for key in list(store.list("blobs/")) + list(store.list("trees/")):
        assert xxhash.xxh3_128_hexdigest(store.get(key)) == key.rsplit("/", 1)[1], key


def test_killed_writers_leave_no_partial_version(store_url, tmp_path):
    rnd = random.Random(1234)
    reg = Registry.open(store_url, create=True)
    for round_ in range(20):
        commits = CTX.Value("i", 0)
        child = CTX.Process(target=commit_forever, args=(store_url, str(tmp_path), round_, commits))
        child.start()
        if round_ == 0:  # one writer surely commits, however loaded the machine: the test must prove something
            wait_for(lambda: commits.value >= 1, timeout=120, what="a first commit")
        time.sleep(rnd.uniform(0.005, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        versions = reg.versions(P, "crashy")
        assert versions == list(range(len(versions)))  # no gaps
        for n in versions:
            check_version_complete(Registry.open(store_url), P, "crashy", n)
        check_objects_whole(reg.store)
    before = reg.versions(P, "crashy")
    assert before, "no writer got as far as a commit; the test proves nothing"
    t0 = time.monotonic()
    src = write_files(str(tmp_path / "after"), {"ok.txt": "survived"})
    art = Artifact("crashy", "dataset", store=store_url)
    art.add_dir(src)
    art.aliases += ["run0", "after"]
    art.tags.append("t")
    art.save(P)
    # well below locks.LOCK_STALE (30 s): a stale lock was broken because its owner is gone, not by age
    assert time.monotonic() - t0 < 15, "a lock left by a killed writer stalled the next commit"
    assert art.version == f"v{len(before)}"
    assert set(art.aliases) >= {"after", "latest", "run0"}
    assert reg.versions(P, "crashy") == list(range(len(before) + 1))
    assert check_version_complete(reg, P, "crashy", len(before)) == 1


# -- the local store's primitives under contention -------------------------------------
def race_put_if_absent(store: str, who: int) -> list[bool]:
    s = LocalStore(store)
    return [s.put_if_absent(f"race/k{i}", f"{who}".encode()) for i in range(30)]


def test_put_if_absent_has_exactly_one_winner(tmp_path):
    store = str(tmp_path / "s")
    results = run_all(race_put_if_absent, [(store, w) for w in range(4)])
    s = LocalStore(store)
    for i in range(30):
        winners = [w for w in range(4) if results[w][i]]
        assert len(winners) == 1
        assert s.get(f"race/k{i}") == str(winners[0]).encode()
    assert sorted(os.listdir(tmp_path / "s" / "race")) == sorted(f"k{i}" for i in range(30))


def increment(store: str, times: int) -> None:
    reg = Registry.open(store)
    for _ in range(times):
        reg._cas_json("counter.json", lambda d: {"n": d.get("n", 0) + 1})


def test_compare_and_swap_counter_loses_no_increment(store_url):
    Registry.open(store_url, create=True)
    run_all(increment, [(store_url, 50)] * 3)
    assert json.loads(Registry.open(store_url).store.get("counter.json")) == {"n": 150}
