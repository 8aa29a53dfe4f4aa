"""Writing through draft/ and committing (issue 4).

  (a) write one big file (default 1 GiB) into draft/ and `artifactfs sync`, vs `cp`
      of the same file into a local folder and `sync`: target ratio >= 0.6
  (b) change 10 files of a version of many files (default 100,000) through the
      mount and `artifactfs sync`: target < 1 s end to end, O(changed) store writes
  (c) many small files (default 10,000 x 4 KiB) copied into a draft and synced:
      files per second, vs `cp -r` into a local folder and `sync`

  .venv/bin/python bench/bench_drafts.py
  .venv/bin/python bench/bench_drafts.py --size-mb 128 --tree-files 20000 --files 2000
"""
from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys

import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (MiB, Noise, Row, Table, artifactfs_mount, cli, emit, fs_note,  # noqa: E402
                    machine_note, make_big_file, make_many_files, run, timed, workdir)

from artifactfs.manifest import FileEntry, apply_changes, artifact_digest, walk  # noqa: E402
from artifactfs.registry import Registry  # noqa: E402


def objects(store: str) -> int:
    return sum(len(files) for _, _, files in os.walk(store))


def synthetic_version(reg: Registry, name: str, count: int, per_dir: int = 1000) -> None:
    """A version of `count` files whose blobs are never read (only their entries)."""
    changes = {}
    for i in range(count):
        raw = xxhash.xxh3_128_digest(f"{name}{i}".encode())
        changes[f"part{i // per_dir:04d}/f{i:07d}.bin"] = FileEntry(base64.b64encode(raw).decode(), 16, (raw.hex(),))
    root = apply_changes(reg, None, changes)
    reg.commit("bench", name, "dataset", root, artifact_digest(walk(reg, root.tree)))


def sync_cmd(path: str) -> None:
    run(cli() + ["sync", path])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--tree-files", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--small-kb", type=int, default=4)
    ap.add_argument("--dir", default=None, help="work directory parent (default: system temp)")
    ap.add_argument("--out", default=None, help="append the markdown tables to this file")
    args = ap.parse_args()
    noise = Noise()
    with workdir(args.dir) as work:
        os.environ["XDG_STATE_HOME"] = os.path.join(work, "state")
        store = os.path.join(work, "store")
        reg = Registry.open(store, create=True)
        synthetic_version(reg, "wide", args.tree_files)
        src = os.path.join(work, "src")
        make_big_file(os.path.join(src, "big.bin"), args.size_mb * MiB, noise)
        make_many_files(os.path.join(src, "small"), args.files, args.small_kb * 1024, noise)
        mnt = os.path.join(work, "mnt")
        table = Table(f"Drafts: writing and committing through the mount ({machine_note()}, {fs_note(work)})")
        with artifactfs_mount(store, mnt, os.path.join(work, "cache"), "--project", "bench"):
            os.mkdir(os.path.join(mnt, "big"))
            os.mkdir(os.path.join(mnt, "small"))
            # (a) one big file
            local = os.path.join(work, "local-a")
            os.mkdir(local)
            base = timed(lambda: (shutil.copyfile(os.path.join(src, "big.bin"), os.path.join(local, "big.bin")),
                                  os.sync()))
            table.add(Row("(a) big file", "cp + sync (local folder)", base, args.size_mb * MiB))
            draft = os.path.join(mnt, "big", "draft")
            t_cp = timed(lambda: shutil.copyfile(os.path.join(src, "big.bin"), os.path.join(draft, "big.bin")))
            t_sync = timed(lambda: sync_cmd(draft))
            table.add(Row("(a) big file", "cp into draft/", t_cp, args.size_mb * MiB))
            table.add(Row("(a) big file", "artifactfs sync", t_sync, args.size_mb * MiB))
            total = t_cp + t_sync
            table.add(Row("(a) big file", "cp + artifactfs sync", total, args.size_mb * MiB,
                          ratio=base / total, target=">= 0.6", met=base / total >= 0.6))
            # (b) ten files of a wide version
            draft = os.path.join(mnt, "wide", "draft")
            before = objects(store)

            def change_ten() -> None:
                for i in range(10):
                    with open(os.path.join(draft, f"part{i:04d}", f"f{i * 1000:07d}.bin"), "wb") as f:
                        f.write(noise.piece(4096))
                sync_cmd(draft)
            t = timed(change_ten)
            writes = objects(store) - before
            table.add(Row(f"(b) 10 of {args.tree_files:,} files", "write 10 files + artifactfs sync", t,
                          target="< 1 s", met=t < 1.0))
            table.notes.append(f"(b) new store objects for the commit: {writes} "
                               f"(10 blobs, the changed trees, the version record and its alias)")
            # (c) many small files
            local = os.path.join(work, "local-c")
            base = timed(lambda: (subprocess.run(["cp", "-r", os.path.join(src, "small"), local], check=True),
                                  os.sync()))
            n = args.files
            table.add(Row(f"(c) {n:,} small files", "cp -r + sync (local folder)", base,
                          n * args.small_kb * 1024))
            draft = os.path.join(mnt, "small", "draft")
            t_cp = timed(lambda: subprocess.run(["cp", "-r", os.path.join(src, "small"), draft], check=True))
            t_sync = timed(lambda: sync_cmd(draft))
            table.add(Row(f"(c) {n:,} small files", "cp -r into draft/", t_cp, n * args.small_kb * 1024))
            table.add(Row(f"(c) {n:,} small files", "artifactfs sync", t_sync, n * args.small_kb * 1024))
            table.add(Row(f"(c) {n:,} small files", "cp -r + artifactfs sync", t_cp + t_sync,
                          n * args.small_kb * 1024, ratio=base / (t_cp + t_sync)))
            table.notes.append(f"(c) files per second: local {n / base:,.0f}, through the mount "
                               f"{n / (t_cp + t_sync):,.0f} (copy {n / t_cp:,.0f}, commit {n / t_sync:,.0f})")
        emit([table], args.out)


if __name__ == "__main__":
    main()
