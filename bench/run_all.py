"""Run every benchmark whose feature exists, at modest sizes by default
(`make bench`, a few minutes); `--full` uses the sizes the issues name.
Markdown tables are printed and, with --out, appended to a file.

  .venv/bin/python bench/run_all.py                 # modest sizes
  .venv/bin/python bench/run_all.py --full --out results.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_drafts  # noqa: E402
import bench_loader  # noqa: E402
import bench_memory  # noqa: E402
import bench_mount  # noqa: E402
import bench_put_get  # noqa: E402
import bench_s3  # noqa: E402
from common import cli  # noqa: E402

MODEST = {
    "put_get": ["--size-mb", "256", "--files", "2000"],
    "mount": ["--size-mb", "256", "--files", "2000", "--tree-files", "20000", "--dataset-mb", "512"],
    "draft": ["--size-mb", "256", "--tree-files", "20000", "--files", "2000"],
    "loader": ["--files", "3000"],
    "memory": ["--folders", "100"],
    "s3": ["--big-mb", "256", "--files", "2000", "--tree-files", "20000", "--small-files", "5000"],
}


def has_command(name: str) -> bool:
    p = subprocess.run(cli() + [name, "--help"], capture_output=True)
    return p.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="issue sizes (1 GiB, 10,000 and 100,000 files, 2 GiB)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the put/get bench (median reported)")
    ap.add_argument("--only", choices=sorted(MODEST), action="append", help="run only these (repeatable)")
    ap.add_argument("--out", default=None, help="append the markdown tables to this file")
    args = ap.parse_args()
    wanted = args.only or sorted(MODEST)
    extra = ["--out", args.out] if args.out else []
    size = (lambda name: []) if args.full else MODEST.get
    if "put_get" in wanted:
        bench_put_get.main(size("put_get") + ["--repeat", str(args.repeat)] + extra)
    if "s3" in wanted:
        bench_s3.main(size("s3") + extra)
    if "mount" in wanted or "draft" in wanted:
        if not has_command("mount"):
            print("skipping the mount and draft benches: no `artifactfs mount` yet")
            return
        if "mount" in wanted:
            bench_mount.main(size("mount") + extra)
        if "loader" in wanted:
            bench_loader.main(size("loader") + extra)
        if "memory" in wanted:
            bench_memory.main(size("memory") + extra)
        if "draft" in wanted:
            if has_command("sync"):
                bench_drafts.main(size("draft") + extra)
            else:
                print("skipping the draft bench: no `artifactfs sync` yet")


if __name__ == "__main__":
    main()
