"""Writing through `draft/` and committing with `artifactfs sync` (issue 4).

  (a) write one big file (default 1 GiB) into draft/ + `artifactfs sync`, vs cp
      of the same file into a local folder + sync               target >= 0.6
      and torch.save of a state dict of that size, vs torch.save to a local
      folder + sync (when torch imports)                        target >= 0.6
      peak RSS of the daemon from its start through (a)         target < 300 MB
  (b) change 10 files of a version of many files (default 100,000) through the
      mount + sync: end to end, and the store objects written   target < 1 s, O(changed)
      then sync again with no change                            target < 0.5 s
  (c) many small files (default 10,000 x 64 KiB) copied into a draft + sync,
      files/s vs cp -r + sync                                   target >= 0.5
      and, as the ceiling of a FUSE daemon on this machine, cp -r into a
      bindfs mount (a C FUSE filesystem) of a local folder + sync
      (skipped when bindfs is not installed: apt-get install bindfs)
The page cache is dropped before each timed step when possible.  The version
of (b) is made directly with the registry (its blobs are never read), so the
set-up stays quick.  Draft staging (XDG_STATE_HOME) and the digest cache live
in the bench's temp dir, on the same disk as the store.

  .venv/bin/python bench/bench_drafts.py                           # full size
  .venv/bin/python bench/bench_drafts.py --size-mb 128 --tree-files 5000 --files 1000
"""
from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time

import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    MiB,
    Noise,
    Row,
    Table,
    artifactfs_mount,
    bindfs_mount,
    cli,
    drop_caches,
    emit,
    fs_note,
    have_bindfs,
    machine_note,
    make_big_file,
    make_many_files,
    run,
    timed,
    tree_bytes,
    workdir,
)

from artifactfs.registry.manifest import FileEntry, apply_changes, artifact_digest, walk  # noqa: E402
from artifactfs.registry.versions import Registry  # noqa: E402

PROJECT = "bench"


def store_objects(store: str) -> set[str]:
    """Every object key in a local store (temporary files excluded)."""
    out = set()
    for dirpath, _, names in os.walk(store):
        for n in names:
            if ".tmp-" not in n and not n.startswith("."):
                out.add(os.path.relpath(os.path.join(dirpath, n), store))
    return out


def synthetic_version(store: str, name: str, count: int, per_dir: int = 1000) -> None:
    """A version of `count` files whose blobs are never read (only their entries)."""
    reg = Registry.open(store, create=True)
    changes = {}
    for i in range(count):
        raw = xxhash.xxh3_128_digest(f"{name}{i}".encode())
        changes[f"part{i // per_dir:04d}/f{i:07d}.bin"] = FileEntry(base64.b64encode(raw).decode(), 16, (raw.hex(),))
    root = apply_changes(reg, None, changes)
    reg.commit(PROJECT, name, "dataset", root, artifact_digest(walk(reg, root.tree)))


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

    def draft(self, name: str) -> str:
        return os.path.join(self.mnt, name, "draft")

    def sync(self, name: str, expect: str) -> None:
        out = run(cli() + ["sync", self.draft(name)]).stdout
        if expect not in out:
            raise SystemExit(f"sync did not commit {expect}: {out.strip()}")


def write_then_sync(b: Bench, table: Table, case: str, name: str, copy: list[str], nbytes: int,
                    base: float, target: float | None) -> float:
    """Rows for copying into a new collection's draft, then sync; returns the total seconds."""
    os.mkdir(os.path.join(b.mnt, name))
    b.drop()
    t_cp = timed(lambda: run(copy + [b.draft(name)]))
    t_sync = timed(lambda: b.sync(name, f"{name}:v0"))
    total = t_cp + t_sync
    table.add(Row(case, "  copy into draft/", t_cp, nbytes))
    table.add(Row(case, "  artifactfs sync", t_sync, nbytes))
    r = base / total
    table.add(Row(case, "copy into draft/ + artifactfs sync", total, nbytes, r,
                  f">= {target} x cp" if target else "", None if target is None else r >= target))
    return total


def case_big(b: Bench, table: Table) -> None:
    src = os.path.join(b.src, "big", "big.bin")
    nbytes = os.path.getsize(src)
    case = f"(a) 1 file x {nbytes // MiB} MiB"
    local = os.path.join(b.work, "local-big")
    os.makedirs(local)
    b.drop()
    base = timed(lambda: (run(["cp", src, local]), os.sync()))
    run(["rm", "-rf", local])
    table.add(Row(case, "cp to a local folder + sync", base, nbytes, 1.0))
    write_then_sync(b, table, case, "bigw", ["cp", src], nbytes, base, 0.6)


SAVER = r"""
import sys, time, torch
torch.manual_seed(0)
n = int(sys.argv[1]) // (4 * 64)
sd = {f"layer{i}.weight": torch.randn(n) for i in range(64)}  # 64 float32 tensors
print("ready", flush=True)
for path in sys.stdin:
    t = time.perf_counter()
    torch.save(sd, path.strip())
    print(time.perf_counter() - t, flush=True)
"""


def case_torch_save(b: Bench, table: Table, nbytes: int) -> None:
    """torch.save of a state dict of `nbytes` into a local folder + sync, then
    into a new draft + artifactfs sync (the dict is built once, before timing)."""
    try:
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(nbytes)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    except OSError:
        return
    assert saver.stdin is not None and saver.stdout is not None
    if saver.stdout.readline().strip() != "ready":
        table.notes.append("torch.save case skipped: torch does not import")
        return
    case = f"(a) torch.save {nbytes // MiB} MiB"

    def save(path: str) -> float:
        saver.stdin.write(path + "\n")
        saver.stdin.flush()
        return float(saver.stdout.readline())
    local = os.path.join(b.work, "local-torch")
    os.makedirs(local)
    b.drop()
    t = time.perf_counter()
    save(os.path.join(local, "model.pt"))
    os.sync()
    base = time.perf_counter() - t
    table.add(Row(case, "torch.save to a local folder + sync", base, nbytes, 1.0))
    os.mkdir(os.path.join(b.mnt, "torchw"))
    b.drop()
    t_save = save(os.path.join(b.draft("torchw"), "model.pt"))
    t_sync = timed(lambda: b.sync("torchw", "torchw:v0"))
    table.add(Row(case, "  torch.save into draft/", t_save, nbytes))
    table.add(Row(case, "  artifactfs sync", t_sync, nbytes))
    r = base / (t_save + t_sync)
    table.add(Row(case, "torch.save into draft/ + artifactfs sync", t_save + t_sync, nbytes, r,
                  ">= 0.6 x", r >= 0.6))
    saver.stdin.close()
    saver.wait()


def peak_memory(b: Bench, table: Table) -> None:
    """The daemon's peak resident memory (VmHWM) since it started."""
    pid = int(os.getxattr(b.mnt, "user.artifactfs.pid"))
    with open(f"/proc/{pid}/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    table.add(Row("(a) daemon memory", f"peak RSS through (a): {peak / MiB:.0f} MB", 0.0, None, None,
                  "< 300 MB", peak < 300 * MiB))


def case_change_ten(b: Bench, table: Table, files: int) -> None:
    case = f"(b) 10 of {files} files"
    chosen = [f"part{i * (files // 10) // 1000:04d}/f{i * (files // 10):07d}.bin" for i in range(10)]
    before = store_objects(b.store)
    b.drop()

    def change() -> None:
        for i, rel in enumerate(chosen):
            with open(os.path.join(b.draft("wide"), rel), "wb") as f:
                f.write(f"changed {i}\n".encode())
        b.sync("wide", "wide:v1")
    seconds = timed(change)
    written = len(store_objects(b.store) - before)
    bound = 10 * (2 + 1) + 10  # per file a blob and the trees on its path (depth 2), plus a few records
    table.add(Row(case, f"write 10 files in draft/ + sync ({written} new store objects)", seconds, None, None,
                  f"< 1 s; <= {bound} objects", seconds < 1 and written <= bound))
    b.drop()
    seconds = timed(lambda: b.sync("wide", "wide:v1 (unchanged)"))
    table.add(Row(case, "sync again, no change", seconds, None, None, "< 0.5 s", seconds < 0.5))


def case_small(b: Bench, table: Table) -> None:
    """cp -r + sync into a local folder (the baseline), into a bindfs mount of a
    local folder (a C FUSE filesystem: the ceiling of a FUSE daemon here), and
    into a draft + artifactfs sync.  The copies stay until the bench ends: on an
    ext4 without a journal, files made just after many were deleted cost more
    (each new inode skips the recently deleted ones, find_inode_bit), which
    deleting the baseline's copy made the draft's copy pay."""
    src = os.path.join(b.src, "small")
    files, nbytes = tree_bytes(src)
    case = f"(c) {files} small files"
    b.drop()
    base = timed(lambda: (run(["cp", "-r", src, os.path.join(b.work, "local-small")]), os.sync()))
    table.add(Row(case, f"cp -r + sync ({files / base:.0f} files/s)", base, nbytes, 1.0))
    peer = None
    if not have_bindfs():
        table.notes.append("(c) the C FUSE peer skipped: bindfs not installed")
        print("  (c) C FUSE peer skipped: bindfs not installed", flush=True)
    else:
        with bindfs_mount(os.path.join(b.work, "bindfs-small"), os.path.join(b.work, "bindfs-mnt"),
                          read_only=False) as mnt:
            b.drop()
            peer = timed(lambda: (run(["cp", "-r", src, mnt]), os.sync()))
        table.add(Row(case, f"peer: cp -r into bindfs (C FUSE) + sync ({files / peer:.0f} files/s)", peer, nbytes,
                      base / peer))
    total = write_then_sync(b, table, case, "smallw", ["cp", "-r", src], nbytes, base, 0.5)
    table.notes.append(f"(c) files per second: cp -r + sync {files / base:.0f}, "
                       + ("" if peer is None else f"bindfs cp -r + sync {files / peer:.0f}, ")
                       + f"draft + artifactfs sync {files / total:.0f}")


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="(a) size of the big file (MiB)")
    ap.add_argument("--tree-files", type=int, default=100_000, help="(b) files in the version changed")
    ap.add_argument("--files", type=int, default=10_000, help="(c) number of small files")
    ap.add_argument("--file-kb", type=int, default=64, help="(c) size of each small file (KiB)")
    ap.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp dir)")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)

    table = Table(f"drafts: write + sync vs cp + sync ({args.size_mb} MiB file; 10 of {args.tree_files} "
                  f"files; {args.files} x {args.file_kb} KiB)")
    with workdir(args.workdir, args.keep) as work:
        cold = not args.warm and drop_caches()
        b = Bench(work, cold)
        os.environ.update(XDG_STATE_HOME=os.path.join(work, "state"),
                          ARTIFACTFS_HASH_CACHE=os.path.join(work, "digests.sqlite"))
        table.notes.append(machine_note() + f"; work dir on {fs_note(work)}; one round")
        table.notes.append("page cache dropped before each step" if cold else "page cache NOT dropped")
        table.notes.append("ratio = cp seconds / draft seconds (> 1: faster than cp); each sync is one CLI process")
        noise = Noise()
        print(f"generating data in {work} ...", flush=True)
        synthetic_version(b.store, "wide", args.tree_files)
        make_big_file(os.path.join(b.src, "big", "big.bin"), args.size_mb * MiB, noise)
        make_many_files(os.path.join(b.src, "small"), args.files, args.file_kb * 1024, noise)
        os.sync()
        with artifactfs_mount(b.store, b.mnt, b.cache, "--project", PROJECT):
            case_big(b, table)
            case_torch_save(b, table, args.size_mb * MiB)
            peak_memory(b, table)
            case_change_ten(b, table, args.tree_files)
            case_small(b, table)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
