"""Run records: which process produced or used a version (lineage, docs/api.md).

A run is one process.  Its record holds an id, the command line, user, host,
working directory, start time, the run ids of the tools around it found in its
environment (W&B, Slurm, MLflow, or ARTIFACTFS_RUN_ID) and the history step it
reported (ARTIFACTFS_STEP or set_step()).  The id is ARTIFACTFS_RUN_ID when set,
else a hash of (host, boot time, pid, process start time): the same process gets
the same id whether it is asked by itself (the Python API) or seen through the
mount (/proc of the FUSE request's pid), so its uses and products line up."""
from __future__ import annotations

import functools
import os
import pwd
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import xxhash

from ..errors import UsageError

RUN_ID_VARIABLES = ("ARTIFACTFS_RUN_ID", "WANDB_RUN_ID", "SLURM_JOB_ID", "MLFLOW_RUN_ID")
STEP_VARIABLE = "ARTIFACTFS_STEP"
_step: int | None = None


@dataclass
class RunRecord:
    id: str
    command: list[str]
    user: str
    host: str
    cwd: str | None
    started_at: str | None          # ISO 8601, UTC
    pid: int
    run_ids: dict[str, str] = field(default_factory=dict)  # variable -> value, as found
    step: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RunRecord":
        return cls(id=str(d["id"]), command=list(d.get("command") or []), user=str(d.get("user", "")),
                   host=str(d.get("host", "")), cwd=d.get("cwd"), started_at=d.get("started_at"),
                   pid=int(d.get("pid", 0)), run_ids=dict(d.get("run_ids") or {}), step=d.get("step"))


def set_step(step: int | None) -> None:
    """Report the history step of this process's next products (history_step);
    overrides $ARTIFACTFS_STEP.  None: back to the environment."""
    global _step
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise UsageError("step must be a non-negative int or None")
    _step = step


def _parse_step(text: str | None) -> int | None:
    try:
        return int(text) if text is not None and int(text) >= 0 else None
    except ValueError:
        return None


@functools.cache
def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2:].split()[19])


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.decode(errors="replace") in (*RUN_ID_VARIABLES, STEP_VARIABLE):
            out[key.decode()] = value.decode(errors="replace")
    return out


@functools.cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _record(pid: int, command: list[str], uid: int, cwd: str | None, env: dict[str, str],
            step: int | None) -> RunRecord:
    host = socket.gethostname()
    boot = _boot_time()  # fixed while the machine runs
    try:
        ticks = _start_ticks(pid)
        started = datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), timezone.utc)
        started_at: str | None = started.isoformat(timespec="microseconds")
    except (OSError, ValueError, IndexError):
        ticks, started_at = 0, None
    run_ids = {k: env[k] for k in RUN_ID_VARIABLES if env.get(k)}
    run_id = run_ids.get("ARTIFACTFS_RUN_ID") or xxhash.xxh3_128_hexdigest(f"{host}:{boot}:{pid}:{ticks}".encode())
    return RunRecord(run_id, command, _user(uid), host, cwd, started_at, pid, run_ids, step)


def current_run() -> RunRecord:
    """This process's record (the step as reported now)."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    step = _step if _step is not None else _parse_step(os.environ.get(STEP_VARIABLE))
    return _record(os.getpid(), [sys.executable, *sys.argv] if sys.argv and sys.argv[0] else [sys.executable],
                   os.getuid(), cwd, dict(os.environ), step)


def process_run(pid: int) -> RunRecord | None:
    """The record of another process of this host, read from /proc (None once it has
    exited).  Reading its environment needs the same user or root, as ps(1) does."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    try:
        cwd: str | None = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    try:
        env = _environ(pid)
    except OSError:
        env = {}
    return _record(pid, command, uid, cwd, env, _parse_step(env.get(STEP_VARIABLE)))
