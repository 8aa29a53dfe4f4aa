"""put/get throughput against `cp -r` + `sync` (issue 2).

Cases: (a) one big file (default 1 GiB), (b) many small files (default 10,000
x 64 KiB).  Steps, each timed with a cold page cache when it can be dropped:
  cp -r + sync            the baseline
  put (first)             `artifactfs put` into a fresh store (durable on return)
  put (again, unchanged)  cold, then warm
  get + sync              `artifactfs get` into a fresh folder, then sync
  xxh3-128 in memory      hashing throughput of the same bytes
Targets: put and get >= 0.7 x cp speed; second put >= 5 x faster than the first.

  .venv/bin/python bench/bench_put_get.py                  # full size
  .venv/bin/python bench/bench_put_get.py --size-mb 64 --files 500   # smoke
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (MiB, Noise, Row, Table, cli, drop_caches, emit, fs_note,  # noqa: E402
                    machine_note, make_big_file, make_many_files, run, timed, tree_bytes, workdir)


def hash_in_memory(src: str) -> tuple[float, int]:
    """Seconds to xxh3-128 every file's bytes already in memory (read first, untimed)."""
    blobs = []
    for dirpath, _, names in os.walk(src):
        for n in sorted(names):
            with open(os.path.join(dirpath, n), "rb") as f:
                blobs.append(f.read())
    t = time.perf_counter()
    for b in blobs:
        xxhash.xxh3_128_digest(b)
    return time.perf_counter() - t, sum(map(len, blobs))


def one_round(case: str, src: str, work: str, cold: bool) -> dict[str, float]:
    """Seconds of each step, from a fresh store and an empty digest cache."""
    store = os.path.join(work, f"store-{case}")
    digests = os.path.join(work, "digests.sqlite")
    env = {**os.environ, "ARTIFACTFS_HASH_CACHE": digests}
    af = cli() + ["--store", store]
    put = af + ["put", src, "data", "--type", "dataset"]
    out: dict[str, float] = {}

    def step(name: str, fn, drop: bool = True) -> None:
        if cold and drop:
            drop_caches()
        out[name] = timed(fn)

    dst = os.path.join(work, "cp")
    step("cp", lambda: (run(["cp", "-r", src, dst]), os.sync()))
    run(["rm", "-rf", dst, store, digests, digests + "-wal", digests + "-shm"])
    step("put", lambda: run(put, env=env))
    again: list[str] = []
    step("again", lambda: again.append(run(put, env=env).stdout))
    if "unchanged" not in again[0]:
        raise SystemExit(f"second put was not a no-op: {again[0].strip()}")
    step("warm", lambda: run(put, env=env), drop=False)
    dest = os.path.join(work, "get")
    step("get", lambda: (run(af + ["get", "data", dest], env=env), os.sync()))
    if tree_bytes(dest) != tree_bytes(src):
        raise SystemExit(f"get wrote {tree_bytes(dest)}, expected {tree_bytes(src)}")
    run(["rm", "-rf", dest, store])
    os.sync()
    return out


def bench_case(table: Table, case: str, src: str, work: str, cold: bool, repeat: int) -> None:
    nbytes = tree_bytes(src)[1]
    rounds = [one_round(case, src, work, cold) for _ in range(repeat)]
    s = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    table.add(Row(case, "cp -r + sync (baseline)", s["cp"], nbytes, 1.0))
    r = s["cp"] / s["put"]
    table.add(Row(case, "put (first, fresh store)", s["put"], nbytes, r, ">= 0.7 x cp", r >= 0.7))
    for key, label in (("again", "put again, unchanged (cold)"), ("warm", "put again, unchanged (warm)")):
        r = s["put"] / s[key]
        table.add(Row(case, label, s[key], nbytes, r, ">= 5 x faster than first", r >= 5))
    r = s["cp"] / s["get"]
    table.add(Row(case, "get + sync (fresh folder)", s["get"], nbytes, r, ">= 0.7 x cp", r >= 0.7))
    hash_s, hashed = hash_in_memory(src)
    table.add(Row(case, "xxh3-128 in memory (1 thread)", hash_s, hashed))


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the single big file (MiB)")
    ap.add_argument("--files", type=int, default=10_000, help="number of small files")
    ap.add_argument("--file-kb", type=int, default=64, help="size of each small file (KiB)")
    ap.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp dir)")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache between steps")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per case; the median is reported")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)

    table = Table(f"put / get vs cp -r + sync ({args.size_mb} MiB file; {args.files} x {args.file_kb} KiB files)")
    with workdir(args.workdir, args.keep) as work:
        cold = not args.warm and drop_caches()
        table.notes.append(machine_note() + f"; work dir on {fs_note(work)}; median of {args.repeat} round(s)")
        table.notes.append("the digest cache (ARTIFACTFS_HASH_CACHE) is private to the run and emptied before each first put")
        table.notes.append("page cache dropped before each cold step (cp, first put, cold second put, get)"
                           if cold else "page cache NOT dropped (not root, or --warm): all steps warm")
        t0 = time.perf_counter()
        run(cli() + ["--help"])
        table.notes.append(f"each artifactfs step is one CLI process; startup ~{time.perf_counter() - t0:.2f} s included")
        noise = Noise()
        print(f"generating data in {work} ...", flush=True)
        big = os.path.join(work, "src-big")
        make_big_file(os.path.join(big, "big.bin"), args.size_mb * MiB, noise)
        small = os.path.join(work, "src-small")
        make_many_files(small, args.files, args.file_kb * 1024, noise)
        os.sync()
        bench_case(table, f"1 file x {args.size_mb} MiB", big, work, cold, args.repeat)
        bench_case(table, f"{args.files} x {args.file_kb} KiB", small, work, cold, args.repeat)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
