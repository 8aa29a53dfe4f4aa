"""Reading through the mount vs reading the store's bytes directly (issue 3),
with `rclone mount` of a plain folder holding the same files as the peer.

  (a) one big file (default 1 GiB), sequential, cold and warm
  (b) many small files (default 10,000 x 64 KiB), cold
  (c) find + stat over a version of many files (default 100,000), cold
  (d) time until the first 1% of a dataset (default 2 GiB) has been read through
      a fresh mount vs `artifactfs get` of all of it first
Cold: the mount is made afresh (empty daemon memory) and the page cache dropped.
"Direct" reads the blob files in the store in file order, i.e. what the mount
has to read; for (c) it is `find` over the source folder on the local disk.
Targets: (a) >= 0.8 cold, >= 0.95 warm; (b) >= 0.5; (c) >= 0.3; (d) >= 20 x;
faster than rclone on (a) and (b).

  .venv/bin/python bench/bench_mount.py                           # full size
  .venv/bin/python bench/bench_mount.py --size-mb 128 --files 1000 --tree-files 5000 --dataset-mb 256
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    MiB,
    Noise,
    Row,
    Table,
    artifactfs_mount,
    cli,
    drop_caches,
    emit,
    files_under,
    fs_note,
    machine_note,
    make_big_file,
    make_many_files,
    median_rows,
    rclone_mount,
    read_files,
    run,
    timed,
    tree_bytes,
    workdir,
)

from artifactfs.registry.manifest import walk  # noqa: E402
from artifactfs.registry.versions import Registry, blob_key  # noqa: E402


class Bench:
    def __init__(self, work: str, cold: bool) -> None:
        self.work = work
        self.cold = cold
        self.store = os.path.join(work, "store")
        self.src = os.path.join(work, "src")
        self.mnt = os.path.join(work, "mnt")
        self.rmnt = os.path.join(work, "rclone")
        self.cache = os.path.join(work, "cache")

    def drop(self) -> None:
        if self.cold:
            drop_caches()

    def put(self, name: str) -> float:
        return timed(lambda: run(cli() + ["--store", self.store, "put", os.path.join(self.src, name), name,
                                          "--type", "dataset"]))

    def blobs(self, name: str) -> list[str]:
        """Store paths of the blobs of version v0 of `name`, in file order."""
        reg = Registry.open(self.store)
        info = reg.get("default", name, "v0")
        return [reg.store.local_path(blob_key(k)) for _, e in sorted(walk(reg, info.root)) for k in e.chunks]

    def version_dir(self, mnt: str, name: str) -> str:
        return os.path.join(mnt, name, f"{name}:v0")

    @contextmanager
    def fresh_mount(self):
        """A new artifactfs mount over a dropped page cache."""
        self.drop()
        with artifactfs_mount(self.store, self.mnt, self.cache):
            yield self.mnt

    @contextmanager
    def fresh_rclone(self):
        self.drop()
        with rclone_mount(self.src, self.rmnt):
            yield self.rmnt


def ratio_row(table: Table, case: str, step: str, seconds: float, nbytes: int | None, base: float,
              target: float | None, what: str = "direct") -> None:
    """A row whose ratio is base/seconds (> 1: faster than the baseline)."""
    r = base / seconds
    table.add(Row(case, step, seconds, nbytes, r, f">= {target} x {what}" if target else "",
                  None if target is None else r >= target))


def case_big(b: Bench, table: Table, name: str) -> None:
    blobs = b.blobs(name)
    nbytes = sum(os.path.getsize(p) for p in blobs)
    case = f"(a) 1 file x {nbytes // MiB} MiB"
    b.drop()
    direct_cold = timed(lambda: read_files(blobs))
    direct_warm = timed(lambda: read_files(blobs))
    table.add(Row(case, "direct blobs, cold", direct_cold, nbytes, 1.0))
    table.add(Row(case, "direct blobs, warm", direct_warm, nbytes, 1.0))
    with b.fresh_mount() as mnt:
        files = files_under(b.version_dir(mnt, name))
        got: list[int] = []
        cold = timed(lambda: got.append(read_files(files)))
        warm = timed(lambda: read_files(files))
    if got[0] != nbytes:
        raise SystemExit(f"read {got[0]} bytes through the mount, expected {nbytes}")
    ratio_row(table, case, "mount, cold", cold, nbytes, direct_cold, 0.8)
    ratio_row(table, case, "mount, warm", warm, nbytes, direct_warm, 0.95)
    with b.fresh_rclone() as rmnt:
        files = files_under(os.path.join(rmnt, name))
        r_cold = timed(lambda: read_files(files))
        r_warm = timed(lambda: read_files(files))
    ratio_row(table, case, "rclone mount, cold", r_cold, nbytes, direct_cold, None)
    ratio_row(table, case, "rclone mount, warm", r_warm, nbytes, direct_warm, None)
    table.add(Row(case, "mount vs rclone, cold", cold, nbytes, r_cold / cold, "> 1 (faster)", r_cold > cold))
    table.add(Row(case, "mount vs rclone, warm", warm, nbytes, r_warm / warm, "> 1 (faster)", r_warm > warm))


def case_small(b: Bench, table: Table, name: str) -> None:
    blobs = b.blobs(name)
    nbytes = sum(os.path.getsize(p) for p in blobs)
    case = f"(b) {len(blobs)} small files"
    b.drop()
    direct = timed(lambda: read_files(blobs))
    table.add(Row(case, "direct blobs, cold", direct, nbytes, 1.0))
    with b.fresh_mount() as mnt:
        files = files_under(b.version_dir(mnt, name))  # listing is not part of the timed read
        cold = timed(lambda: read_files(files))
    ratio_row(table, case, "mount, cold", cold, nbytes, direct, 0.5)
    with b.fresh_rclone() as rmnt:
        files = files_under(os.path.join(rmnt, name))
        r_cold = timed(lambda: read_files(files))
    ratio_row(table, case, "rclone mount, cold", r_cold, nbytes, direct, None)
    table.add(Row(case, "mount vs rclone, cold", cold, nbytes, r_cold / cold, "> 1 (faster)", r_cold > cold))


def find_stat(root: str) -> int:
    """`find -printf` of size and mtime: a stat of every entry; entries seen."""
    p = run(["find", root, "-printf", "%s %T@\n"])
    return p.stdout.count("\n")


def case_tree(b: Bench, table: Table, name: str) -> None:
    files, _ = tree_bytes(os.path.join(b.src, name))
    case = f"(c) find+stat, {files} files"
    b.drop()
    local = timed(lambda: find_stat(os.path.join(b.src, name)))
    table.add(Row(case, "local folder, cold", local, None, 1.0))
    with b.fresh_mount() as mnt:
        seen: list[int] = []
        cold = timed(lambda: seen.append(find_stat(b.version_dir(mnt, name))))
        warm = timed(lambda: find_stat(b.version_dir(mnt, name)))
    if seen[0] < files:
        raise SystemExit(f"find saw {seen[0]} entries through the mount, expected >= {files}")
    ratio_row(table, case, "mount, cold", cold, None, local, 0.3, "local")
    ratio_row(table, case, "mount, warm", warm, None, local, None, "local")
    with b.fresh_rclone() as rmnt:
        r_cold = timed(lambda: find_stat(os.path.join(rmnt, name)))
    ratio_row(table, case, "rclone mount, cold", r_cold, None, local, None, "local")


def case_first_percent(b: Bench, table: Table, name: str) -> None:
    total = tree_bytes(os.path.join(b.src, name))[1]
    want = total // 100
    case = f"(d) first 1% of {total // MiB} MiB"
    dest = os.path.join(b.work, "get")
    b.drop()
    get_s = timed(lambda: (run(cli() + ["--store", b.store, "get", name, dest]),
                           read_files(files_under(dest), want)))
    run(["rm", "-rf", dest])
    table.add(Row(case, "artifactfs get all, then read 1%", get_s, total, 1.0))
    with artifactfs_mount(b.store, b.mnt, b.cache):
        b.drop()
        first = timed(lambda: read_files(files_under(b.version_dir(b.mnt, name)), want))
    ratio_row(table, case, "running mount: read 1%", first, want, get_s, 20, "get")
    b.drop()
    t0 = time.perf_counter()
    with artifactfs_mount(b.store, b.mnt, b.cache):
        mounted = time.perf_counter() - t0
        got = read_files(files_under(b.version_dir(b.mnt, name)), want)
        with_start = time.perf_counter() - t0
    if got < want:
        raise SystemExit(f"read only {got} of {want} bytes through the mount")
    ratio_row(table, case, f"mount ({mounted:.2f} s) + read 1%", with_start, want, get_s, None, "get")
    with rclone_mount(b.src, b.rmnt):
        b.drop()
        r_first = timed(lambda: read_files(files_under(os.path.join(b.rmnt, name)), want))
    ratio_row(table, case, "running rclone mount: read 1%", r_first, want, get_s, None, "get")


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="(a) size of the big file (MiB)")
    ap.add_argument("--files", type=int, default=10_000, help="(b) number of small files")
    ap.add_argument("--file-kb", type=int, default=64, help="(b) size of each small file (KiB)")
    ap.add_argument("--tree-files", type=int, default=100_000, help="(c) files in the find+stat version")
    ap.add_argument("--dataset-mb", type=int, default=2048, help="(d) dataset size (MiB)")
    ap.add_argument("--shard-mb", type=int, default=16, help="(d) size of each dataset file (MiB)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per case; medians are reported")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)

    table = Table(f"mount reads vs direct store reads and rclone ({args.size_mb} MiB file; "
                  f"{args.files} x {args.file_kb} KiB; {args.tree_files} files; {args.dataset_mb} MiB dataset)")
    with workdir(args.workdir, args.keep) as work:
        cold = not args.warm and drop_caches()
        b = Bench(work, cold)
        os.environ.update(ARTIFACTFS_PROJECT="default", ARTIFACTFS_HASH_CACHE=os.path.join(work, "digests.sqlite"))
        table.notes.append(machine_note() + f"; work dir on {fs_note(work)}; median of {args.repeat} round(s)")
        table.notes.append("page cache dropped and a fresh mount made before each cold step" if cold
                           else "page cache NOT dropped: cold steps are only fresh mounts")
        table.notes.append("ratio = baseline seconds / seconds (> 1: faster than the baseline); "
                           "rclone: `rclone mount SRC MNT --read-only` (no VFS cache) of the source folder")
        noise = Noise()
        print(f"generating data in {work} ...", flush=True)
        make_big_file(os.path.join(b.src, "big", "big.bin"), args.size_mb * MiB, noise)
        make_many_files(os.path.join(b.src, "small"), args.files, args.file_kb * 1024, noise)
        make_many_files(os.path.join(b.src, "tree"), args.tree_files, 64, noise)
        make_many_files(os.path.join(b.src, "dataset"), args.dataset_mb // args.shard_mb, args.shard_mb * MiB,
                        noise, per_dir=64)
        for name in ("big", "small", "tree", "dataset"):
            print(f"put {name}: {b.put(name):.1f} s", flush=True)
        os.sync()
        for case, name in ((case_big, "big"), (case_small, "small"), (case_tree, "tree"),
                           (case_first_percent, "dataset")):
            rounds = []
            for _ in range(args.repeat):
                t = Table(table.title)
                case(b, t, name)
                rounds.append(t.rows)
            table.rows += median_rows(rounds)
        subprocess.run(["fusermount3", "-u", b.mnt], capture_output=True)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
