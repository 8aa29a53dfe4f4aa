"""`artifactfs mount` and `artifactfs umount`.

mount checks everything it can in the caller's process (mountpoint, store,
sizes) so mistakes are one line, then starts the daemon in its own session and
returns only once the daemon says the mount answers (or prints its error)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import click

from ..artifact import default_project
from ..cache import default_cache_dir, parse_size
from ..errors import ArtifactfsError
from ..names import check_name, check_type
from ..registry import Registry
from ..store import default_store_url
from .state import FSTYPE, find_mount, log_path, read_record, real_mountpoint

if TYPE_CHECKING:
    from . import daemon

READY_TIMEOUT = 60.0


def _check_mountpoint(path: str) -> str:
    real = os.path.realpath(path)  # not mounted yet (checked below): resolving it is safe
    if not os.path.isdir(real):
        raise ArtifactfsError(f"mountpoint {path} does not exist or is not a directory")
    m = find_mount(real)
    if m is not None and m.fstype == FSTYPE:
        raise ArtifactfsError(f"{path} is already an artifactfs mount")
    try:
        if os.listdir(real):
            raise ArtifactfsError(f"mountpoint {path} is not empty")
    except PermissionError:
        raise ArtifactfsError(f"mountpoint {path} is not readable") from None
    return real


def _size(text: str, what: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise ArtifactfsError(f"{what}: {e}") from None


def _spawn(opts: "daemon.MountOptions") -> None:
    """Start the daemon detached and wait for its 'ready' or error line."""
    from . import daemon
    r, w = os.pipe()
    logfile = open(log_path(opts.mountpoint), "ab")
    os.chmod(logfile.name, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "artifactfs.mount.daemon", daemon.options_json(opts), str(w)],
            stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, pass_fds=(w,), cwd="/",
            start_new_session=True)
    finally:
        os.close(w)
        logfile.close()
    with os.fdopen(r) as pipe:
        ready, _, _ = select.select([pipe], [], [], READY_TIMEOUT)
        line = pipe.readline().strip() if ready else ""
    if line == "ready":
        return
    if not ready:
        proc.kill()
        raise ArtifactfsError(f"the mount daemon did not become ready within {READY_TIMEOUT:.0f} s "
                              f"(log: {log_path(opts.mountpoint)})")
    proc.wait()
    if line.startswith("error: "):
        raise ArtifactfsError(line[len("error: "):])
    raise ArtifactfsError(f"the mount daemon exited with status {proc.returncode} "
                          f"(log: {log_path(opts.mountpoint)})")


@click.command(name="mount")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option("--store", metavar="URL", default=None, help="Store URL or path (default: the global --store).")
@click.option("--project", metavar="NAME", default=None, help="Project (default: the global --project).")
@click.option("--cache-dir", metavar="DIR", default=None, help="Chunk cache directory [~/.cache/artifactfs].")
@click.option("--cache-size", metavar="SIZE", default="10G", show_default=True,
              help="Cap of the chunk cache on disk (K, M, G, T suffixes).")
@click.option("--memory", metavar="SIZE", default="256M", show_default=True,
              help="Cap of the in-memory chunk cache of the daemon.")
@click.option("--refresh", metavar="SECONDS", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="New versions and moved aliases appear within this time.")
@click.option("--foreground", is_flag=True, help="Serve in this process; log to stderr too.")
@click.option("--allow-other", is_flag=True, help="Let other users see the mount.")
@click.option("--read-only", is_flag=True, help="Mount read-only (ro).")
@click.option("--default-type", metavar="TYPE", default="dataset", show_default=True,
              help="Type of collections created with mkdir.")
@click.option("--debug", is_flag=True, help="Log every request.")
@click.pass_context
def mount_cmd(c: click.Context, mountpoint: str, store: str | None, project: str | None,
              cache_dir: str | None, cache_size: str, memory: str, refresh: float, foreground: bool,
              allow_other: bool, read_only: bool, default_type: str, debug: bool) -> None:
    """Mount the collections of a project at MOUNTPOINT (returns once the mount is live)."""
    from . import daemon  # pyfuse3 and trio: only loaded by the commands that need them
    parent = c.obj
    store = store or getattr(parent, "store", None) or default_store_url()
    project = check_name(project or getattr(parent, "project", None) or default_project(), "project")
    real = _check_mountpoint(mountpoint)
    registry = Registry.open(store)  # an unreachable store or a non-store is refused here
    opts = daemon.MountOptions(
        mountpoint=real, store=registry.store.url, project=project,
        cache_dir=os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir())),
        cache_size=_size(cache_size, "--cache-size"), memory=_size(memory, "--memory"),
        refresh=refresh, foreground=foreground, allow_other=allow_other, read_only=read_only, debug=debug,
        default_type=check_type(default_type))
    if foreground:
        daemon.run(opts)
    else:
        _spawn(opts)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@click.command(name="umount")
@click.argument("mountpoint", type=click.Path())
@click.option("--timeout", metavar="SECONDS", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="How long files still open may keep being read before the daemon is stopped.")
def umount_cmd(mountpoint: str, timeout: float) -> None:
    """Unmount MOUNTPOINT and wait for its daemon to exit.

    The mount is detached at once (new opens no longer reach it); files already
    open stay readable until closed or until --timeout, then the daemon is stopped."""
    real = real_mountpoint(mountpoint)
    m = find_mount(real)
    if m is None or m.fstype != FSTYPE:
        raise ArtifactfsError(f"{mountpoint} is not an artifactfs mount")
    rec = read_record(real)
    pid = int(rec["pid"]) if rec and _alive(int(rec["pid"])) else None
    done = subprocess.run(["fusermount3", "-u", "-z", real], capture_output=True, text=True)
    if done.returncode != 0:
        raise ArtifactfsError(f"cannot unmount {mountpoint}: {done.stderr.strip() or 'fusermount3 failed'}")
    if pid is None or _wait_gone(pid, timeout):
        return
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 30.0):
        raise ArtifactfsError(f"unmounted {mountpoint}, but its daemon (pid {pid}) did not exit")
