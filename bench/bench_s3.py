"""artifactfs over S3 (a moto server on 127.0.0.1) against its peers, on the same
bucket and data, in one run:

  mount reads (cold: fresh caches, page cache dropped), vs `s3fs` (s3fs-fuse) and
  `rclone mount` of the same bytes stored as plain objects in the same bucket:
    (a) sequential read of one big file, (b) reading many 64 KiB files in order,
    (c) `ls -R` of a version with many files;
    (f) the first (cold) epoch of a shuffled 4-process torch DataLoader over small
        sample files (bench_loader.py's data set), listing included;
  transfers, vs plain boto3 on the same bytes:
    (d) put and get of the big file vs upload_file / download_file,
    (e) put of many small files vs an 8-thread boto3 upload_file of each.

  .venv/bin/python bench/bench_s3.py                  # the issue's sizes (1 GiB, 100,000 files)
  .venv/bin/python bench/bench_s3.py --big-mb 256 --tree-files 20000 --small-files 5000

Notes for reading the numbers: moto answers a ranged GET in time proportional
to the whole object (it reads it all), which penalises peers that read one big
object by ranges more than artifactfs, whose objects are at most 8 MiB; s3fs
HEADs every key it lists.  rclone runs with AWS_CA_BUNDLE unset (it refuses an
unreadable bundle)."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from common import (MiB, Noise, Row, Table, cli, drop_caches, emit, files_under,  # noqa: E402
                    machine_note, make_big_file, make_many_files, read_files, run, timed,
                    wait_mounted, workdir)
from bench_loader import epoch, make_samples  # noqa: E402
from s3server import moto_server  # noqa: E402

PLAIN = "plain"  # the peers' copy: the same files as plain objects below this prefix


@contextmanager
def peer_mount(cmd: list[str], mnt: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A peer's FUSE mount made by `cmd` (which daemonizes), always unmounted afterwards."""
    os.makedirs(mnt, exist_ok=True)
    run(cmd, env=env)
    try:
        wait_mounted(mnt)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)


def s3fs_mount(bucket: str, endpoint: str, mnt: str, passwd: str):
    return peer_mount(["s3fs", f"{bucket}:/{PLAIN}", mnt, "-o", f"url={endpoint}", "-o", "use_path_request_style",
                       "-o", f"passwd_file={passwd}", "-o", "ro"], mnt)


def rclone_s3_mount(bucket: str, endpoint: str, mnt: str):
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return peer_mount(["rclone", "mount", f":s3:{bucket}/{PLAIN}", mnt, "--s3-provider", "Other",
                       "--s3-endpoint", endpoint, "--s3-env-auth", "--read-only", "--daemon",
                       "--config", "/dev/null"], mnt, env)


@contextmanager
def af_mount(store: str, mnt: str, cache: str) -> Iterator[str]:
    os.makedirs(mnt, exist_ok=True)
    run(cli() + ["--store", store, "--project", "bench", "mount", mnt, "--cache-dir", cache, "--read-only"])
    try:
        yield mnt
    finally:
        subprocess.run(cli() + ["umount", mnt], capture_output=True)


def ls_r(root: str) -> int:
    done = subprocess.run(["ls", "-R", root], capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"ls -R {root} failed: {done.stderr.decode().strip()}")
    return done.stdout.count(b"\n")


def upload_plain(client, bucket: str, src: str, threads: int = 8) -> None:
    """boto3: every file below src as s3://bucket/plain/<relative path>, `threads` at a time."""
    paths = files_under(src)

    def one(p: str) -> None:
        client.upload_file(p, bucket, f"{PLAIN}/{os.path.relpath(p, src)}")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, paths))


def cold(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds of `rounds` runs, each after dropping the page cache."""
    times = []
    for _ in range(rounds):
        drop_caches()
        times.append(timed(fn))
    return statistics.median(times)


def mount_case(table: Table, case: str, nbytes: int | None, rounds: int, work: str,
               ours: Callable[[str], object], peers: Callable[[str], object], store: str,
               bucket: str, endpoint: str, passwd: str) -> None:
    """Time `ours(mountpoint)` on a fresh artifactfs mount (fresh cache each round)
    and `peers(mountpoint)` on fresh s3fs and rclone mounts; ratios vs the faster peer."""
    def fresh(make_mount, fn):
        times = []
        for i in range(rounds):
            with make_mount(i) as mnt:
                drop_caches()
                times.append(timed(lambda: fn(mnt)))
        return statistics.median(times)
    a = fresh(lambda i: af_mount(store, os.path.join(work, f"af{case[1]}{i}"), os.path.join(work, f"cache{case[1]}{i}")),
              ours)
    s = fresh(lambda i: s3fs_mount(bucket, endpoint, os.path.join(work, "s3fs"), passwd), peers)
    r = fresh(lambda i: rclone_s3_mount(bucket, endpoint, os.path.join(work, "rclone")), peers)
    best = min(s, r)
    table.add(Row(case, "s3fs", s, nbytes))
    table.add(Row(case, "rclone mount", r, nbytes))
    table.add(Row(case, f"artifactfs vs the faster peer ({'s3fs' if s < r else 'rclone'})", a, nbytes,
                  best / a, ">= 1.5 x", best / a >= 1.5))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-mb", type=int, default=1024, help="size of the big file (MiB)")
    ap.add_argument("--files", type=int, default=2000, help="64 KiB files read through the mounts")
    ap.add_argument("--tree-files", type=int, default=100000, help="files of the version listed with ls -R")
    ap.add_argument("--small-files", type=int, default=20000, help="1 KiB files put (case e)")
    ap.add_argument("--samples", type=int, default=6000, help="2-24 KiB sample files read by the loader (case f)")
    ap.add_argument("--rounds", type=int, default=3, help="cold runs per mount case (median)")
    ap.add_argument("--only", action="append", choices=list("abcdef"), help="cases to run (repeatable)")
    ap.add_argument("--dir", default=None, help="parent of the work directory")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cases = set(args.only or "abcdef")
    noise = Noise()
    mount_table = Table(f"S3 mounts, cold, median of {args.rounds} (moto on 127.0.0.1)")
    xfer_table = Table("S3 put/get vs plain boto3 (moto on 127.0.0.1)")
    with workdir(args.dir) as work, moto_server() as srv:
        client = srv.client()
        store = srv.new_bucket_url("af")
        bucket = store[len("s3://"):].split("/")[0]
        passwd = os.path.join(work, "s3fs.passwd")
        with open(os.open(passwd, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(f"{os.environ['AWS_ACCESS_KEY_ID']}:{os.environ['AWS_SECRET_ACCESS_KEY']}\n")
        src = os.path.join(work, "src")
        os.makedirs(src)
        if cases & set("ad"):  # only the data the chosen cases read
            make_big_file(os.path.join(src, "big", "big.bin"), args.big_mb * MiB, noise)
        if "b" in cases:
            make_many_files(os.path.join(src, "small"), args.files, 64 * 1024, noise)
        if "c" in cases:
            make_many_files(os.path.join(src, "tree"), args.tree_files, 16, noise)
        if "f" in cases:
            samples_bytes = make_samples(os.path.join(src, "samples"), args.samples)
        put = cli() + ["--store", store, "--project", "bench", "put", "--type", "dataset"]
        for part in sorted(os.listdir(src)):
            run(put + [os.path.join(src, part), part])
        upload_plain(client, bucket, src)
        mnt_path = lambda m, part, *rest: os.path.join(m, part, f"{part}:v0", *rest)  # noqa: E731
        if "a" in cases:
            mount_case(mount_table, f"(a) {args.big_mb} MiB sequential", args.big_mb * MiB, args.rounds, work,
                       lambda m: read_files([mnt_path(m, "big", "big.bin")]),
                       lambda m: read_files([os.path.join(m, "big", "big.bin")]), store, bucket, srv.endpoint, passwd)
        if "b" in cases:
            mount_case(mount_table, f"(b) {args.files} x 64 KiB", args.files * 64 * 1024, args.rounds, work,
                       lambda m: read_files(files_under(mnt_path(m, "small"))),
                       lambda m: read_files(files_under(os.path.join(m, "small"))), store, bucket, srv.endpoint,
                       passwd)
        if "c" in cases:
            mount_case(mount_table, f"(c) ls -R, {args.tree_files} files", None, args.rounds, work,
                       lambda m: ls_r(mnt_path(m, "tree")), lambda m: ls_r(os.path.join(m, "tree")),
                       store, bucket, srv.endpoint, passwd)
        if "f" in cases:
            mount_case(mount_table, f"(f) loader epoch, {args.samples} files, 4 workers", samples_bytes, args.rounds,
                       work, lambda m: epoch(files_under(mnt_path(m, "samples")), 4, 0),
                       lambda m: epoch(files_under(os.path.join(m, "samples")), 4, 0), store, bucket, srv.endpoint,
                       passwd)
        if "d" in cases:
            big = os.path.join(src, "big", "big.bin")
            nbytes = args.big_mb * MiB
            base_up = cold(lambda: client.upload_file(big, bucket, "boto3/big.bin"), 1)
            store2 = srv.new_bucket_url("af")
            ours_up = cold(lambda: run(cli() + ["--store", store2, "put", "--type", "model",
                                                os.path.join(src, "big"), "big"]), 1)
            xfer_table.add(Row("(d) put", "boto3 upload_file", base_up, nbytes))
            xfer_table.add(Row("(d) put", "artifactfs put", ours_up, nbytes, base_up / ours_up, ">= 0.8 x",
                               base_up / ours_up >= 0.8))
            dest = os.path.join(work, "get")
            base_down = cold(lambda: client.download_file(bucket, "boto3/big.bin", os.path.join(work, "b.bin")), 1)
            ours_down = cold(lambda: run(cli() + ["--store", store2, "get", "big", dest]), 1)
            xfer_table.add(Row("(d) get", "boto3 download_file", base_down, nbytes))
            xfer_table.add(Row("(d) get", "artifactfs get", ours_down, nbytes, base_down / ours_down, ">= 0.8 x",
                               base_down / ours_down >= 0.8))
        if "e" in cases:
            many = os.path.join(work, "many")
            make_many_files(many, args.small_files, 1024, noise)
            base = timed(lambda: upload_plain(client, srv.new_bucket_url()[len("s3://"):], many))
            store3 = srv.new_bucket_url("af")
            ours = timed(lambda: run(cli() + ["--store", store3, "put", "--type", "dataset", many, "many"]))
            n = f"(e) put {args.small_files} x 1 KiB"
            xfer_table.add(Row(n, "boto3, 8 threads", base, args.small_files * 1024))
            xfer_table.add(Row(n, "artifactfs put", ours, args.small_files * 1024, base / ours, ">= 1.5 x",
                               base / ours >= 1.5))
    for t in (mount_table, xfer_table):
        t.notes.append(machine_note())
        t.notes.append("command: `.venv/bin/python bench/bench_s3.py " + " ".join(argv or sys.argv[1:]) + "`")
    emit([t for t in (mount_table, xfer_table) if t.rows], args.out)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"(bench took {time.monotonic() - started:.0f} s)")
