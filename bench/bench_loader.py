"""A training loader reading small sample files: a real torch.utils.data.DataLoader
(shuffled, several worker processes) over a version through the mount, against
the same files in a local folder, in the same run (issue 9).

  (e) one epoch over N small files (default 6,000 of 2-24 KiB in 10 class folders),
      DataLoader(shuffle=True, num_workers=4, batch_size=64): warm (second epoch)
      and cold (page cache dropped, fresh mount); the listing is done before timing
  (f) open + read + close of a warm 4 KiB file, one process, Python's open():
      per-file microseconds through NAME:vN, NAME:latest (an alias symlink) and
      NAME@vN, against the local file
Targets: (e) >= 0.9 x local warm, >= 0.8 x cold; (f) within 3 x local.
Each step also runs through Debian's `bindfs -o ro` of the local files when it is
installed (a C FUSE filesystem: the ratio any FUSE mount reaches on this machine),
its ratio printed next to ours; without it a note says "skipped: bindfs not installed".
Each round runs (e) then (f); with several mounts compared, their order
alternates from round to round.
With --compare-opens every mount step is also run on a mount with --send-opens
(every OPEN and RELEASE answered by Python: what a stock pyfuse3 gives,
docs/mount-semantics.md); with --compare-no-opens on a mount with --no-opens (no
OPEN at all, instead of the default: version files' OPENs answered natively);
with --compare-reads on a mount with --python-reads (every READ answered by Python,
none by pyfuse3's native threads); with --compare-read-only on a --read-only mount
(no OPEN either, as a training mount would be).

  .venv/bin/python bench/bench_loader.py
  .venv/bin/python bench/bench_loader.py --files 2000 --repeat 3
  .venv/bin/python bench/bench_loader.py --compare-opens
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Noise, Row, Table, artifactfs_mount, bindfs_mount, cli, drop_caches, emit,  # noqa: E402
                    files_under, fs_note, have_bindfs, machine_note, median_rows, run, workdir)

from artifactfs.mount import noopen  # noqa: E402

CLASSES = 10
PEER = "bindfs -o ro (C FUSE peer)"


def make_samples(root: str, count: int, seed: int = 0) -> int:
    """count files of 2-24 KiB in CLASSES folders (like an ImageFolder); total bytes."""
    rng = random.Random(seed)
    noise = Noise(4 * 1024 * 1024)
    total = 0
    for c in range(CLASSES):
        os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
    for i in range(count):
        data = noise.piece(rng.randrange(2048, 24 * 1024))
        with open(os.path.join(root, f"class{i % CLASSES}", f"s{i:06d}.bin"), "wb") as f:
            f.write(data)
        total += len(data)
    return total


class Samples:
    """A map-style dataset: the bytes read, per file (decoding is not what is measured)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        with open(self.paths[i], "rb") as f:
            return len(f.read())


def epoch(paths: list[str], workers: int, seed: int) -> float:
    """Seconds for one shuffled epoch through a DataLoader; checks every file was read."""
    import torch
    from torch.utils.data import DataLoader
    loader = DataLoader(Samples(paths), batch_size=64, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    seen = 0
    t = time.perf_counter()
    for sizes in loader:
        seen += len(sizes)
    took = time.perf_counter() - t
    if seen != len(paths):
        raise SystemExit(f"the loader gave {seen} samples, expected {len(paths)}")
    return took


def open_read_close_us(paths: list[str], rounds: int = 3) -> float:
    """Median over rounds of the mean microseconds per open + read + close (warm)."""
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for p in paths:
            with open(p, "rb") as f:
                f.read()
        out.append((time.perf_counter() - t) / len(paths) * 1e6)
    return statistics.median(out)


def case_loader(work: str, store: str, src: str, nbytes: int, workers: int, cold: bool,
                table: Table, seed: int, modes: dict[str, tuple[str, ...]]) -> None:
    case = f"(e) DataLoader, {workers} workers"
    mnt, cache = os.path.join(work, "mnt"), os.path.join(work, "cache")
    local = files_under(src)
    epoch(local, workers, seed)
    warm_local = epoch(local, workers, seed + 1)
    table.add(Row(case, "local folder, warm", warm_local, nbytes, 1.0))
    for mode, extra in modes.items():
        with artifactfs_mount(store, mnt, cache, *extra):
            paths = files_under(os.path.join(mnt, "samples", "samples:v0"))
            epoch(paths, workers, seed)
            warm = epoch(paths, workers, seed + 1)
        r = warm_local / warm
        table.add(Row(case, f"{mode}, warm", warm, nbytes, r, ">= 0.9 x local", r >= 0.9))
    if have_bindfs():
        with bindfs_mount(src, os.path.join(work, "bindfs")) as bmnt:
            paths = files_under(bmnt)
            epoch(paths, workers, seed)
            warm = epoch(paths, workers, seed + 1)
        table.add(Row(case, f"{PEER}, warm", warm, nbytes, warm_local / warm))
    if not cold:
        return
    drop_caches()
    local = files_under(src)
    cold_local = epoch(local, workers, seed + 2)
    table.add(Row(case, "local folder, cold", cold_local, nbytes, 1.0))
    for mode, extra in modes.items():
        drop_caches()
        with artifactfs_mount(store, mnt, cache, *extra):
            paths = files_under(os.path.join(mnt, "samples", "samples:v0"))
            cold_mnt = epoch(paths, workers, seed + 2)
        r = cold_local / cold_mnt
        table.add(Row(case, f"{mode}, cold", cold_mnt, nbytes, r, ">= 0.8 x local", r >= 0.8))
    if have_bindfs():
        drop_caches()
        with bindfs_mount(src, os.path.join(work, "bindfs")) as bmnt:
            cold_peer = epoch(files_under(bmnt), workers, seed + 2)
        table.add(Row(case, f"{PEER}, cold", cold_peer, nbytes, cold_local / cold_peer))


def make_four(work: str, store: str) -> list[str]:
    """(f)'s 1,000 files of 4 KiB, in a local folder `four` and put as version four:v0; their names."""
    one = os.path.join(work, "four")
    os.makedirs(one, exist_ok=True)
    for i in range(1000):
        with open(os.path.join(one, f"f{i:04d}.bin"), "wb") as f:
            f.write(os.urandom(4096))
    run(cli() + ["--store", store, "put", one, "four", "--type", "dataset"])
    return sorted(os.listdir(one))


def case_open(work: str, store: str, names: list[str], table: Table, modes: dict[str, tuple[str, ...]]) -> None:
    case = "(f) warm open+read+close 4 KiB"
    local = open_read_close_us([os.path.join(work, "four", n) for n in names])
    table.add(Row(case, "local folder (us per file)", local, None, 1.0))
    for mode, extra in modes.items():
        with artifactfs_mount(store, os.path.join(work, "mnt"), os.path.join(work, "cache"), *extra):
            for spelling in ("four:v0", "four:latest", "four@v0"):
                us = open_read_close_us([os.path.join(work, "mnt", "four", spelling, n) for n in names])
                r = local / us
                table.add(Row(case, f"{mode} {spelling} (us per file)", us, None, r, ">= 0.33 x local",
                              r >= 1 / 3))
    if have_bindfs():
        with bindfs_mount(os.path.join(work, "four"), os.path.join(work, "bindfs")) as bmnt:
            us = open_read_close_us([os.path.join(bmnt, n) for n in names])
        table.add(Row(case, f"{PEER} (us per file)", us, None, local / us))


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=6000, help="(e) sample files")
    ap.add_argument("--workers", type=int, default=4, help="(e) DataLoader worker processes")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache (no cold steps)")
    ap.add_argument("--compare-opens", action="store_true", help="also every mount step with --send-opens")
    ap.add_argument("--compare-no-opens", action="store_true", help="also every mount step with --no-opens")
    ap.add_argument("--compare-reads", action="store_true", help="also every mount step with --python-reads")
    ap.add_argument("--compare-read-only", action="store_true",
                    help="also every mount step with --read-only (no OPEN, the kernel refuses writes)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)
    table = Table(f"training loader over {args.files} small files, and warm 4 KiB opens")
    modes = {"mount": ()} | ({"mount --send-opens": ("--send-opens",)} if args.compare_opens else {}) \
        | ({"mount --no-opens": ("--no-opens",)} if args.compare_no_opens else {}) \
        | ({"mount --python-reads": ("--python-reads",)} if args.compare_reads else {}) \
        | ({"mount --read-only": ("--read-only",)} if args.compare_read_only else {})
    with workdir(args.workdir, args.keep) as work:
        os.environ.update(ARTIFACTFS_PROJECT="default", ARTIFACTFS_HASH_CACHE=os.path.join(work, "digests.sqlite"))
        cold = not args.warm and drop_caches()
        table.notes.append(machine_note() + f"; work dir on {fs_note(work)}; median of {args.repeat} round(s)")
        table.notes.append("cold: page cache dropped and a fresh mount made before the epoch" if cold
                           else "page cache NOT dropped: no cold steps")
        table.notes.append("ratio = local seconds / mount seconds (> 1: faster than local); (f) seconds "
                           "column holds microseconds per file")
        table.notes.append("mount: " + noopen.describe(noopen.OpenMode.choose(), False))
        if not have_bindfs():
            table.notes.append("C FUSE peer: skipped: bindfs not installed")
        store, src = os.path.join(work, "store"), os.path.join(work, "samples")
        nbytes = make_samples(src, args.files)
        run(cli() + ["--store", store, "put", src, "samples", "--type", "dataset"])
        os.sync()
        names = make_four(work, store)
        rounds: list[list[Row]] = []
        for n in range(args.repeat):  # the mounts' order alternates from round to round
            t = Table(table.title)
            order = dict(reversed(modes.items())) if n % 2 else modes
            case_loader(work, store, src, nbytes, args.workers, cold, t, seed=10 * n, modes=order)
            case_open(work, store, names, t, order)
            steps = [(r.case, r.step) for r in (rounds[0] if rounds else t.rows)]
            rounds.append(sorted(t.rows, key=lambda r: steps.index((r.case, r.step))))
        table.rows += median_rows(rounds)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
