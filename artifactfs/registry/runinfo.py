"""Run records: which process produced or used a version (lineage, docs/api.md).

A run is one process.  Its record holds an id, the program's name, user, host,
pid, start time, the run ids of the tools around it found in its environment
(W&B, Slurm, MLflow, or ARTIFACTFS_RUN_ID) and the history step it reported
(ARTIFACTFS_STEP or set_step()).  Never its arguments or working directory:
records go to a store other people read, and command lines hold secrets
(--password=..., --hf-token=...) as often as not (program_of()).  The id is ARTIFACTFS_RUN_ID when set,
else a hash of (host, boot time, pid, process start time): the same process gets
the same id whether it is asked by itself (the Python API) or seen through the
mount (/proc of the FUSE request's pid), so its uses and products line up."""
from __future__ import annotations

import functools
import os
import pwd
import re
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import xxhash

from ..errors import UsageError

RUN_ID_VARIABLES = ("ARTIFACTFS_RUN_ID", "WANDB_RUN_ID", "SLURM_JOB_ID", "MLFLOW_RUN_ID")
STEP_VARIABLE = "ARTIFACTFS_STEP"
# programs that run a script named by their first argument (python3.11 train.py)
_INTERPRETER = re.compile(r"(python|pypy)[\d.]*|sh|bash|dash|zsh|ksh|perl|ruby|node|Rscript|julia")
_OPTIONS_WITH_VALUE = {"-W", "-X", "-Q"}  # python's: skipped with their value on the way to the script
_step: int | None = None


@dataclass
class RunRecord:
    id: str
    program: str                    # program_of(argv): a name, never an argument
    user: str
    host: str
    started_at: str | None          # ISO 8601, UTC
    pid: int
    run_ids: dict[str, str] = field(default_factory=dict)  # variable -> value, as found
    step: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RunRecord":
        """A stored record; one written before `program` existed held the whole
        command line and cwd: only the program's name is taken from it."""
        program = d["program"] if "program" in d else program_of([str(a) for a in d.get("command") or []])
        return cls(id=str(d["id"]), program=str(program), user=str(d.get("user", "")), host=str(d.get("host", "")),
                   started_at=d.get("started_at"), pid=int(d.get("pid", 0)), run_ids=dict(d.get("run_ids") or {}),
                   step=d.get("step"))


def program_of(argv: list[str]) -> str:
    """What a run record keeps of a command line: the program's name, no argument.
    `/usr/bin/cat f` -> "cat"; an interpreter running a script gives the script's
    name: `python3 -u /x/train.py --lr 1` -> "train.py", `sh run.sh` -> "run.sh";
    `python -m torch.distributed.run ...` -> "torch.distributed.run";
    `python -c CODE`, `sh -c CMD` -> "python -c", "sh -c" (the code is an argument).
    A title a process wrote over its argv (setproctitle) is cut at its first space.
    "" for an empty command line (a kernel thread, a zombie)."""
    words = argv[0].split() if argv else []
    name = os.path.basename(words[0]) if words else ""
    if not _INTERPRETER.fullmatch(name):
        return name
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "-m":
            return os.path.basename(next(rest, "")) or name
        if arg in ("-c", "-e"):
            return f"{name} {arg}"
        if arg in _OPTIONS_WITH_VALUE:
            next(rest, None)
        elif not arg.startswith("-"):
            return os.path.basename(arg) or name
    return name


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


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def _record(pid: int, argv: list[str], uid: int, env: dict[str, str], step: int | None) -> RunRecord:
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
    return RunRecord(run_id, program_of(argv), _user(uid), host, started_at, pid, run_ids, step)


def current_run() -> RunRecord:
    """This process's record (the step as reported now).  Its command line is read
    from /proc as the mount reads it, so both see the same program."""
    step = _step if _step is not None else _parse_step(os.environ.get(STEP_VARIABLE))
    try:
        argv = _cmdline(os.getpid())
    except OSError:
        argv = [sys.executable, *sys.argv]
    return _record(os.getpid(), argv, os.getuid(), dict(os.environ), step)


def process_run(pid: int) -> RunRecord | None:
    """The record of another process of this host, read from /proc (None once it has
    exited).  Reading its environment needs the same user or root, as ps(1) does."""
    try:
        argv = _cmdline(pid)
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    try:
        env = _environ(pid)
    except OSError:
        env = {}
    return _record(pid, argv, uid, env, _parse_step(env.get(STEP_VARIABLE)))
