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


def bench_case(table: Table, case: str, src: str, work: str, cold: bool) -> None:
    files, nbytes = tree_bytes(src)
    store = os.path.join(work, f"store-{case}")
    af = cli() + ["--store", store]

    def cache() -> None:
        if cold:
            drop_caches()

    cache()
    dst = os.path.join(work, f"cp-{case}")
    cp_s = timed(lambda: (run(["cp", "-r", src, dst]), os.sync()))
    table.add(Row(case, "cp -r + sync (baseline)", cp_s, nbytes, 1.0))
    run(["rm", "-rf", dst])

    cache()
    put_s = timed(lambda: run(af + ["put", src, "data", "--type", "dataset"]))
    r = cp_s / put_s
    table.add(Row(case, "put (first, fresh store)", put_s, nbytes, r, ">= 0.7 x cp", r >= 0.7))

    cache()
    out: list[str] = []
    again_s = timed(lambda: out.append(run(af + ["put", src, "data", "--type", "dataset"]).stdout))
    if "unchanged" not in out[0]:
        raise SystemExit(f"second put was not a no-op: {out[0].strip()}")
    r = put_s / again_s
    table.add(Row(case, "put again, unchanged (cold)", again_s, nbytes, r,
                  ">= 5 x faster than first", r >= 5))
    warm_s = timed(lambda: run(af + ["put", src, "data", "--type", "dataset"]))
    r = put_s / warm_s
    table.add(Row(case, "put again, unchanged (warm)", warm_s, nbytes, r, ">= 5 x faster than first", r >= 5))

    cache()
    dest = os.path.join(work, f"get-{case}")
    get_s = timed(lambda: (run(af + ["get", "data", dest]), os.sync()))
    r = cp_s / get_s
    table.add(Row(case, "get + sync (fresh folder)", get_s, nbytes, r, ">= 0.7 x cp", r >= 0.7))
    if tree_bytes(dest) != (files, nbytes):
        raise SystemExit(f"get wrote {tree_bytes(dest)}, expected {(files, nbytes)}")
    run(["rm", "-rf", dest, store])

    hash_s, hashed = hash_in_memory(src)
    table.add(Row(case, "xxh3-128 in memory (1 thread)", hash_s, hashed))
    os.sync()


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the single big file (MiB)")
    ap.add_argument("--files", type=int, default=10_000, help="number of small files")
    ap.add_argument("--file-kb", type=int, default=64, help="size of each small file (KiB)")
    ap.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp dir)")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache between steps")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)

    table = Table(f"put / get vs cp -r + sync ({args.size_mb} MiB file; {args.files} x {args.file_kb} KiB files)")
    with workdir(args.workdir, args.keep) as work:
        cold = not args.warm and drop_caches()
        table.notes.append(machine_note() + f"; work dir on {fs_note(work)}")
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
        bench_case(table, f"1 file x {args.size_mb} MiB", big, work, cold)
        bench_case(table, f"{args.files} x {args.file_kb} KiB", small, work, cold)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
