"""Writing through `draft/` and committing with `artifactfs sync` (issue 4).

  (a) write one big file (default 1 GiB) into draft/ + sync, vs cp of the same
      file into a local folder + sync                          target >= 0.6
  (b) change 10 files of a version of many files (default 100,000) through the
      mount + sync: end to end, and the store objects written   target < 1 s, O(changed)
  (c) many small files (default 10,000 x 64 KiB) written into a draft + sync,
      files/s vs cp -r + sync
Each step starts from a dropped page cache when possible.  The draft staging
area and the digest cache live in the bench's temp dir (XDG_STATE_HOME,
ARTIFACTFS_HASH_CACHE), on the same disk as the store.

  .venv/bin/python bench/bench_draft.py                           # full size
  .venv/bin/python bench/bench_draft.py --size-mb 128 --tree-files 5000 --files 1000
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (MiB, Noise, Row, Table, artifactfs_mount, cli, drop_caches, emit,  # noqa: E402
                    fs_note, machine_note, make_big_file, make_many_files, run, timed, tree_bytes, workdir)


def store_objects(store: str) -> set[str]:
    """Every object key in a local store (temporary files excluded)."""
    out = set()
    for dirpath, _, names in os.walk(store):
        for n in names:
            if ".tmp-" not in n and not n.startswith("."):
                out.add(os.path.relpath(os.path.join(dirpath, n), store))
    return out


class Bench:
    def __init__(self, work: str, cold: bool) -> None:
        self.work, self.cold = work, cold
        self.store = os.path.join(work, "store")
        self.src = os.path.join(work, "src")
        self.mnt = os.path.join(work, "mnt")
        self.cache = os.path.join(work, "cache")

    def drop(self) -> None:
        if self.cold:
            drop_caches()

    def sync_draft(self, name: str) -> str:
        return run(cli() + ["sync", os.path.join(self.mnt, name, "draft")]).stdout.strip()


def case_big(b: Bench, table: Table, size_mb: int) -> None:
    src = os.path.join(b.src, "big", "big.bin")
    nbytes = os.path.getsize(src)
    case = f"(a) 1 file x {size_mb} MiB"
    local = os.path.join(b.work, "local-big")
    os.makedirs(local)
    b.drop()
    cp_s = timed(lambda: (run(["cp", src, local]), os.sync()))
    run(["rm", "-rf", local])
    table.add(Row(case, "cp to a local folder + sync", cp_s, nbytes, 1.0))
    os.mkdir(os.path.join(b.mnt, "bigw"))
    b.drop()
    out: list[str] = []
    draft_s = timed(lambda: (run(["cp", src, os.path.join(b.mnt, "bigw", "draft")]),
                             out.append(b.sync_draft("bigw"))))
    if "bigw:v0" not in out[0]:
        raise SystemExit(f"sync did not commit bigw:v0: {out[0]}")
    r = cp_s / draft_s
    table.add(Row(case, "cp into draft/ + artifactfs sync", draft_s, nbytes, r, ">= 0.6 x cp", r >= 0.6))


def case_change_ten(b: Bench, table: Table, files: int) -> None:
    case = f"(b) 10 of {files} files"
    draft = os.path.join(b.mnt, "tree", "draft")
    targets = sorted(os.path.relpath(os.path.join(d, n), os.path.join(b.src, "tree"))
                     for d, _, ns in os.walk(os.path.join(b.src, "tree")) for n in ns)
    step = max(1, len(targets) // 10)
    chosen = targets[::step][:10]
    before = store_objects(b.store)
    b.drop()
    out: list[str] = []

    def change() -> None:
        for i, rel in enumerate(chosen):
            with open(os.path.join(draft, rel), "wb") as f:
                f.write(f"changed {i}\n".encode())
        out.append(b.sync_draft("tree"))
    seconds = timed(change)
    if "tree:v1" not in out[0]:
        raise SystemExit(f"sync did not commit tree:v1: {out[0]}")
    written = len(store_objects(b.store) - before)
    bound = 10 * (2 + 1) + 10  # a blob and the trees on the path (depth 2 here) per file, plus records
    ok = seconds < 1 and written <= bound
    table.add(Row(case, f"write 10 files in draft/ + sync ({written} new store objects)", seconds, None, None,
                  f"< 1 s; <= {bound} objects", ok))


def case_small(b: Bench, table: Table) -> None:
    src = os.path.join(b.src, "small")
    files, nbytes = tree_bytes(src)
    case = f"(c) {files} small files"
    local = os.path.join(b.work, "local-small")
    b.drop()
    cp_s = timed(lambda: (run(["cp", "-r", src, local]), os.sync()))
    run(["rm", "-rf", local])
    table.add(Row(case, f"cp -r + sync ({files / cp_s:.0f} files/s)", cp_s, nbytes, 1.0))
    os.mkdir(os.path.join(b.mnt, "smallw"))
    b.drop()
    out: list[str] = []
    draft_s = timed(lambda: (run(["cp", "-r", src, os.path.join(b.mnt, "smallw", "draft")]),
                             out.append(b.sync_draft("smallw"))))
    if "smallw:v0" not in out[0]:
        raise SystemExit(f"sync did not commit smallw:v0: {out[0]}")
    table.add(Row(case, f"cp -r into draft/ + sync ({files / draft_s:.0f} files/s)", draft_s, nbytes,
                  cp_s / draft_s))


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="(a) size of the big file (MiB)")
    ap.add_argument("--tree-files", type=int, default=100_000, help="(b) files in the version changed")
    ap.add_argument("--files", type=int, default=10_000, help="(c) number of small files")
    ap.add_argument("--file-kb", type=int, default=64, help="(c) size of each small file (KiB)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)

    table = Table(f"drafts: write + sync vs cp + sync ({args.size_mb} MiB file; 10 of {args.tree_files} "
                  f"files; {args.files} x {args.file_kb} KiB)")
    with workdir(args.workdir, args.keep) as work:
        cold = not args.warm and drop_caches()
        b = Bench(work, cold)
        os.environ.update(ARTIFACTFS_PROJECT="default", XDG_STATE_HOME=os.path.join(work, "state"),
                          ARTIFACTFS_HASH_CACHE=os.path.join(work, "digests.sqlite"))
        table.notes.append(machine_note() + f"; work dir on {fs_note(work)}; one round")
        table.notes.append("page cache dropped before each step" if cold else "page cache NOT dropped")
        table.notes.append("ratio = cp seconds / draft seconds (> 1: faster than cp)")
        noise = Noise()
        print(f"generating data in {work} ...", flush=True)
        make_big_file(os.path.join(b.src, "big", "big.bin"), args.size_mb * MiB, noise)
        make_many_files(os.path.join(b.src, "tree"), args.tree_files, 64, noise)
        make_many_files(os.path.join(b.src, "small"), args.files, args.file_kb * 1024, noise)
        t = time.perf_counter()
        run(cli() + ["--store", b.store, "put", os.path.join(b.src, "tree"), "tree", "--type", "dataset"])
        print(f"put tree: {time.perf_counter() - t:.1f} s", flush=True)
        os.sync()
        with artifactfs_mount(b.store, b.mnt, b.cache):
            case_big(b, table, args.size_mb)
            case_change_ten(b, table, args.tree_files)
            case_small(b, table)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
