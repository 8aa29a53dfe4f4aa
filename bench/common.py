"""Shared pieces of the benchmarks: test data, cold caches, timing, tables.

Every bench works in one temporary directory on the filesystem that holds the
data (default: the system temp dir), so copies, the store and downloads all hit
the same disk, and prints a table of seconds, MB/s and ratios."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
MiB = 1024 * 1024


def cli() -> list[str]:
    """The artifactfs command: the venv's entry point, else `python -m artifactfs`."""
    exe = os.path.join(VENV_BIN, "artifactfs")
    return [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "artifactfs"]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure show its stderr and stop the bench."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
    return p


def drop_caches() -> bool:
    """Write back dirty data and drop the page cache; False when not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@contextmanager
def workdir(parent: str | None, keep: bool = False) -> Iterator[str]:
    """A private temporary directory (0700), removed afterwards unless keep."""
    d = tempfile.mkdtemp(prefix="artifactfs-bench-", dir=parent)
    try:
        yield d
    finally:
        if keep:
            print(f"(kept {d})")
        else:
            shutil.rmtree(d, ignore_errors=True)


# -- test data ---------------------------------------------------------------
class Noise:
    """Incompressible bytes, fast: one random pool, each piece made unique by a
    counter header so no two chunks or files deduplicate."""

    def __init__(self, pool_bytes: int = 16 * MiB) -> None:
        self.pool = os.urandom(pool_bytes)
        self.n = 0

    def piece(self, size: int) -> bytes:
        self.n += 1
        head = self.n.to_bytes(16, "little")
        if size <= len(self.pool):
            off = (self.n * 4099) % (len(self.pool) - size + 1)
            return (head + self.pool[off + 16:off + size])[:size]
        return (head + self.pool * (size // len(self.pool) + 1))[:size]


def make_big_file(path: str, size: int, noise: Noise, piece: int = 4 * MiB) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(piece, left)
            f.write(noise.piece(n))
            left -= n


def make_many_files(root: str, count: int, size: int, noise: Noise, per_dir: int = 1000) -> None:
    """count files of `size` bytes, at most per_dir per folder (like real datasets)."""
    for i in range(count):
        d = os.path.join(root, f"part{i // per_dir:04d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}.bin"), "wb") as f:
            f.write(noise.piece(size))


def tree_bytes(root: str) -> tuple[int, int]:
    """(files, bytes) below root."""
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return files, total


# -- results -----------------------------------------------------------------
@dataclass
class Row:
    case: str
    step: str
    seconds: float
    nbytes: int | None = None
    ratio: float | None = None      # relative to the baseline; > 1 is faster
    target: str = ""
    met: bool | None = None

    @property
    def mbps(self) -> float | None:
        if self.nbytes is None or self.seconds <= 0:
            return None
        return self.nbytes / MiB / self.seconds


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.case:<22} {row.step:<34} {row.seconds:8.3f} s", flush=True)
        return row

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| case | step | seconds | MB/s | ratio | target | met |",
               "|---|---|---:|---:|---:|---|---|"]
        for r in self.rows:
            mbps = f"{r.mbps:.0f}" if r.mbps is not None else ""
            ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            out.append(f"| {r.case} | {r.step} | {r.seconds:.3f} | {mbps} | {ratio} | {r.target} | {met} |")
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def machine_note() -> str:
    """CPU count, memory and the filesystem of the work dir, for the results."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Python {sys.version.split()[0]}; "
            f"load average {load:.1f} at the start (other work on the machine adds noise)")


def fs_note(path: str) -> str:
    """Filesystem type of `path` from /proc/mounts (longest matching mount point)."""
    path = os.path.realpath(path)
    best, fstype = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


def emit(tables: list[Table], out: str | None) -> None:
    """Print the tables as markdown and append them to `out` if given."""
    text = "\n".join(t.markdown() for t in tables)
    print()
    print(text)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")


# -- mounts ------------------------------------------------------------------
def wait_mounted(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not become a mount within {timeout:.0f} s")
        time.sleep(0.05)


@contextmanager
def artifactfs_mount(store: str, mnt: str, cache_dir: str, *extra: str) -> Iterator[str]:
    """`artifactfs mount` (returns when live), always unmounted afterwards."""
    os.makedirs(mnt, exist_ok=True)
    run(cli() + ["--store", store, "mount", mnt, "--cache-dir", cache_dir, *extra])
    try:
        yield mnt
    finally:
        subprocess.run(cli() + ["umount", mnt], capture_output=True)


@contextmanager
def rclone_mount(src: str, mnt: str) -> Iterator[str]:
    """The peer: `rclone mount` of a local folder, read-only, no VFS cache."""
    os.makedirs(mnt, exist_ok=True)
    run(["rclone", "mount", src, mnt, "--read-only", "--daemon", "--config", "/dev/null"])
    try:
        wait_mounted(mnt)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)


def have_bindfs() -> bool:
    return shutil.which("bindfs") is not None


@contextmanager
def bindfs_mount(src: str, mnt: str, read_only: bool = True) -> Iterator[str]:
    """The C FUSE peer: Debian's `bindfs` of a local folder (`-o ro` unless told;
    libfuse, every request answered in C, no Python anywhere): what a FUSE mount
    costs on this machine."""
    os.makedirs(src, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    run(["bindfs", *(["-o", "ro"] if read_only else []), src, mnt])
    try:
        wait_mounted(mnt)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)


def read_files(paths: list[str], stop_after: int | None = None) -> int:
    """Read files whole, in order, with one reused 1 MiB buffer; bytes read.
    With stop_after, stop once that many bytes have been read."""
    buf = memoryview(bytearray(MiB))
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while True:
                n = os.readv(fd, [buf])
                total += n
                if n == 0 or (stop_after is not None and total >= stop_after):
                    break
        finally:
            os.close(fd)
        if stop_after is not None and total >= stop_after:
            break
    return total


def files_under(root: str) -> list[str]:
    """Every file below root, in sorted walk order."""
    out = []
    for dirpath, dirnames, names in os.walk(root):
        dirnames.sort()
        out += [os.path.join(dirpath, n) for n in sorted(names)]
    return out


def median_rows(rounds: list[list[Row]]) -> list[Row]:
    """Rows of several rounds of the same steps, merged: median seconds and median
    ratio (each ratio is within its own round), the target judged on the latter."""
    out = []
    for same in zip(*rounds):
        first = same[0]
        ratios = [r.ratio for r in same if r.ratio is not None]
        ratio = statistics.median(ratios) if ratios else None
        met = None if first.met is None or ratio is None else _met_again(first, ratio)
        out.append(Row(first.case, first.step, statistics.median(r.seconds for r in same), first.nbytes,
                       ratio, first.target, met))
    return out


def _met_again(row: Row, ratio: float) -> bool:
    """Judge a '>= X ...' or '> X ...' target on a merged ratio."""
    words = row.target.split()
    bound = float(words[1])
    return ratio >= bound if words[0] == ">=" else ratio > bound
