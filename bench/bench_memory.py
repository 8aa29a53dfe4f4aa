"""The daemon's memory on a version of very many files (issue 9): a `find` over
all of it, then the kernel forgetting its inodes (`echo 2 > drop_caches`),
with the inode soft limit at its default and turned off, in the same run.

  (g) FOLDERS x PER_FOLDER files (default 1,000 x 1,000), built quickly with the
      Python API (one shared 64-byte blob); daemon RSS after mounting, after
      the find, and after the drop; the find's seconds
Targets: under 300 MB through and after the walk, memory given back after the drop.

  .venv/bin/python bench/bench_memory.py                        # 1,000,000 files
  .venv/bin/python bench/bench_memory.py --folders 200          # 200,000 files
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, Table, artifactfs_mount, emit, machine_note, run, timed, workdir  # noqa: E402

from artifactfs.api.artifact import Artifact  # noqa: E402
from artifactfs.chunks import upload  # noqa: E402
from artifactfs.registry.versions import Registry  # noqa: E402

MB = 1024 * 1024


def build(store: str, work: str, folders: int, per_folder: int) -> None:
    Registry.open(store, create=True)
    one = os.path.join(work, "one.bin")
    with open(one, "wb") as f:
        f.write(b"x" * 64)
    art = Artifact("big", "dataset", store=store)
    entry = upload.upload_file(art._reg(), one)
    for d in range(folders):
        for i in range(per_folder):
            art._stage(f"d{d:04d}/f{i:04d}.bin", entry, one, False)
    art.save("default")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def drop_inodes() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


def measure(table: Table, store: str, work: str, files: int, limit: str) -> None:
    case = f"(g) find over {files} files, --inode-limit {limit}"
    mnt = os.path.join(work, "mnt")
    with artifactfs_mount(store, mnt, os.path.join(work, "cache"), "--inode-limit", limit):
        pid = int(os.getxattr(mnt, "user.artifactfs.pid"))
        table.add(Row(case, "daemon RSS after mount (MB)", rss(pid) / MB))
        seconds = timed(lambda: run(["find", os.path.join(mnt, "big", "big:v0")]))
        table.add(Row(case, "find (s)", seconds))
        walked = rss(pid) / MB
        table.add(Row(case, "daemon RSS after find (MB)", walked, None, None, "< 300", walked < 300))
        drop_inodes()
        time.sleep(3)  # FORGETs arrive in the background; the limit's service trims every 0.2 s
        dropped = rss(pid) / MB
        table.add(Row(case, "daemon RSS after drop_caches (MB)", dropped, None, None, "< 300", dropped < 300))


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folders", type=int, default=1000)
    ap.add_argument("--per-folder", type=int, default=1000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)
    files = args.folders * args.per_folder
    table = Table(f"daemon memory over a version of {files} files")
    with workdir(args.workdir) as work:
        os.environ.update(ARTIFACTFS_PROJECT="default", ARTIFACTFS_HASH_CACHE=os.path.join(work, "digests.sqlite"))
        table.notes.append(machine_note() + "; one run; the seconds column holds MB for the RSS rows")
        store = os.path.join(work, "store")
        print(f"building {files} files: {timed(lambda: build(store, work, args.folders, args.per_folder)):.1f} s",
              flush=True)
        for limit in ("100000", "0"):
            measure(table, store, work, files, limit)
    emit([table], args.out)
    return table


if __name__ == "__main__":
    main()
