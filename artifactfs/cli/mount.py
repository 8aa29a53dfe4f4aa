"""`artifactfs mount` and `artifactfs umount`.

mount checks everything it can in the caller's process (mountpoint, store,
sizes) so mistakes are one line, then starts the daemon in its own session and
returns only once the daemon says the mount answers (or prints its error)."""
from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import threading
import time

import click

from ..api.artifact import default_project
from ..chunks.cache import default_cache_dir, parse_size
from ..errors import ArtifactfsError, shown
from ..mount.options import DEFAULT_INODE_LIMIT, DEFAULT_THREADS, MountOptions
from ..mount.state import (
    FSTYPE,
    abort_connection,
    find_mount,
    log_path,
    read_record,
    real_mountpoint,
    take_outcome,
)
from ..registry.names import check_name, check_type
from ..registry.versions import Registry
from ..store import default_store_url
from .drafts import CONTROL_XATTR, commit_drafts, flush_mount, report

READY_TIMEOUT = 60.0
BUSY_NOTE_AFTER = 1.0  # s: umount says what it waits for once the daemon has not exited by then


def _probe(path: str, timeout: float = 2.0) -> int | None:
    """Ask the mount's daemon something the kernel never caches (an xattr) without
    risking a hang: None if it answered, else the errno (ETIMEDOUT: no answer)."""
    result: list[int | None] = []

    def probe() -> None:
        try:
            os.getxattr(path, "user.artifactfs.pid")
            result.append(None)
        except OSError as e:
            result.append(None if e.errno == errno.ENODATA else e.errno)
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else errno.ETIMEDOUT


def _detach(real: str) -> None:
    done = subprocess.run(["fusermount3", "-u", "-z", real], capture_output=True, text=True)
    if done.returncode != 0:
        raise ArtifactfsError(f"cannot unmount {real}: {done.stderr.strip() or 'fusermount3 failed'}")


def _check_mountpoint(path: str) -> str:
    """The real path of an empty directory to mount on.  A stale mount of ours
    (its daemon died: ENOTCONN or ECONNABORTED) is cleared, so a restart just works."""
    m = find_mount(real_mountpoint(path))
    if m is not None and m.fstype == FSTYPE:
        if _probe(m.mountpoint) not in (errno.ENOTCONN, errno.ECONNABORTED):
            raise ArtifactfsError(f"{path} is already an artifactfs mount")
        _detach(m.mountpoint)
    real = os.path.realpath(path)  # not mounted now: resolving it is safe
    if not os.path.isdir(real):
        raise ArtifactfsError(f"mountpoint {path} does not exist or is not a directory")
    other = find_mount(real)  # the path may be a symlink to a mount
    if other is not None and other.fstype == FSTYPE:
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


def _spawn(opts: MountOptions) -> None:
    """Start the daemon detached and wait for its 'ready' or error line."""
    r, w = os.pipe()
    logfile = open(log_path(opts.mountpoint), "ab")
    os.chmod(logfile.name, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "artifactfs.mount.daemon", opts.to_json(), str(w)],
            stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, pass_fds=(w,), cwd="/",
            start_new_session=True)
    finally:
        os.close(w)
        logfile.close()
    with os.fdopen(r) as pipe:
        ready, _, _ = select.select([pipe], [], [], READY_TIMEOUT)
        line = pipe.readline().strip() if ready else ""
        while line.startswith("note: "):  # (sent at once with "ready")
            click.echo(line, err=True)
            line = pipe.readline().strip()
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
@click.option("--cache-dir", metavar="DIR", default=None,
              help="Chunk cache directory [default $XDG_CACHE_HOME/artifactfs, "
                   "XDG_CACHE_HOME being ~/.cache when unset].")
@click.option("--cache-size", metavar="SIZE", default="10G", show_default=True,
              help="Cap of the chunk cache on disk (K, M, G, T suffixes).")
@click.option("--memory", metavar="SIZE", default="256M", show_default=True,
              help="Cap of the in-memory chunk cache of the daemon.")
@click.option("--inode-limit", metavar="N", type=click.IntRange(min=0), default=DEFAULT_INODE_LIMIT,
              show_default=True, help="Soft limit of inodes the daemon keeps; beyond it the kernel is asked "
              "to forget the version folders used least recently (0: no limit).")
@click.option("--threads", metavar="N", type=click.IntRange(min=1), default=DEFAULT_THREADS, show_default=True,
              help="Worker threads for blocking work (store and cache reads, chunk fetches, draft writes).")
@click.option("--refresh", metavar="SECONDS", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="New versions and moved aliases appear within this time.")
@click.option("--foreground", is_flag=True, help="Serve in this process; log to stderr too.")
@click.option("--allow-other", is_flag=True, help="Let other users see the mount.")
@click.option("--read-only", is_flag=True, help="Mount read-only (ro).")
@click.option("--default-type", metavar="TYPE", default="dataset", show_default=True,
              help="Type of collections created with mkdir.")
@click.option("--send-opens", is_flag=True, help="Have the daemon's Python code answer every open and close "
              "(as with a stock pyfuse3), also of version files: a use recorded at every open; slower.")
@click.option("--no-opens", is_flag=True, help="Have the kernel send no open or close at all (faster warm opens); "
              "version files are then owned by no user (stat shows 65534), so the kernel refuses every "
              "open of one for writing, root's too, with EACCES instead of EROFS.")
@click.option("--python-reads", is_flag=True, help="Have the daemon's Python code answer every read, also "
              "of the small version files pyfuse3's native threads could answer (for comparisons).")
@click.option("--debug", is_flag=True, help="Log at debug level.")
@click.pass_context
def mount_cmd(c: click.Context, mountpoint: str, store: str | None, project: str | None,
              cache_dir: str | None, cache_size: str, memory: str, inode_limit: int, threads: int, refresh: float,
              foreground: bool, allow_other: bool, read_only: bool, default_type: str, send_opens: bool,
              no_opens: bool, python_reads: bool, debug: bool) -> None:
    """Mount the collections of a project at MOUNTPOINT (returns once the mount is live)."""
    if send_opens and no_opens:
        raise click.UsageError("--send-opens and --no-opens exclude each other")
    parent = c.obj
    store = store or getattr(parent, "store", None) or default_store_url()
    if project is None:
        project = getattr(parent, "project", None) or default_project()
    check_name(project, "project")
    real = _check_mountpoint(mountpoint)
    # a writable mount writes (mkdir, drafts, sync), so like put it creates a store that does not
    # exist yet; --read-only never does.  An unreachable store or a non-store is refused here.
    registry = Registry.open(store, create=not read_only)
    if registry.created:  # a mistyped --store should not pass unnoticed
        click.echo(f"created a new, empty store at {shown(registry.store.url)}", err=True)
    opts = MountOptions(
        mountpoint=real, store=registry.store.url, project=project,
        cache_dir=os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir())),
        cache_size=_size(cache_size, "--cache-size"), memory=_size(memory, "--memory"), inode_limit=inode_limit,
        threads=threads,
        refresh=refresh, foreground=foreground, allow_other=allow_other, read_only=read_only, debug=debug,
        default_type=check_type(default_type), send_opens=send_opens, no_opens=no_opens,
        native_reads=not python_reads)
    if foreground:
        from ..mount import (
            daemon,  # pyfuse3 and trio: loaded only by the process that serves
        )
        daemon.run(opts, lambda notes: [click.echo(line, err=True) for line in notes])
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
@click.option("--stop-timeout", metavar="SECONDS", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="How long the stopped daemon may take to commit drafts and exit before it is killed "
                   "and its FUSE connection aborted.")
def umount_cmd(mountpoint: str, timeout: float, stop_timeout: float) -> None:
    """Commit the drafts with changes, unmount MOUNTPOINT and wait for its daemon to exit.

    Each version committed is printed as `sync` prints it.  A draft that cannot be
    committed (a conflict, an unreachable store) is named on stderr and kept on
    disk, where the next mount finds it; umount still unmounts, then exits 1.
    The mount is detached at once after the commit (new opens no longer reach
    it); files already open stay readable until closed or until --timeout, then
    the daemon is stopped.  As it stops it commits what was written meanwhile,
    except a draft with files still being written: that one is left unpublished,
    marked recovered (each printed as above)."""
    real = real_mountpoint(mountpoint)
    m = find_mount(real)
    if m is None or m.fstype != FSTYPE:
        raise ArtifactfsError(f"{mountpoint} is not an artifactfs mount")
    pid = _daemon_pid(real)
    failed = _commit_first(real, timeout)
    _detach(real)
    if pid is not None and not _wait_gone(pid, min(timeout, BUSY_NOTE_AFTER)):
        click.echo(f"waiting up to {timeout:g} s for the processes still using {mountpoint} (open files, "
                   "current folders: see `fuser -vm`) to let go", err=True)
    if pid is not None and not _wait_gone(pid, max(0.0, timeout - BUSY_NOTE_AFTER)):
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, stop_timeout):
            _kill_hung(pid, m.dev, mountpoint, real, stop_timeout)
        click.echo(f"files of {mountpoint} were still open after {timeout:g} s: its daemon was stopped, their "
                   f"reads and writes now fail (ENOTCONN); see {log_path(real)}", err=True)
    at_stop = take_outcome(real, pid) if pid is not None else None
    failures = len(failed) if at_stop is None else len(report({"results": at_stop}, frozenset(failed)))
    if failures:
        raise ArtifactfsError(f"unmounted {mountpoint}; {failures} draft(s) could not be committed and stay "
                              "on disk for the next mount (see above)")


def _kill_hung(pid: int, dev: tuple[int, int], mountpoint: str, real: str, waited: float) -> None:
    """The daemon did not exit `waited` s after SIGTERM (stuck, e.g. in the kernel):
    kill it and abort its FUSE connection, so that neither it nor the programs
    waiting on it hang for good; always raises, naming what was done."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    aborted = abort_connection(dev)
    gone = _wait_gone(pid, 10.0)
    done = "killed it" + (" and aborted its FUSE connection (requests waiting on it get ENOTCONN)"
                          if aborted else "; its FUSE connection could not be aborted (fusectl)")
    raise ArtifactfsError(f"unmounted {mountpoint}, but its daemon (pid {pid}) did not stop within "
                          f"{waited:g} s of SIGTERM: {done}" + ("" if gone else ", and it has not exited")
                          + f"; see {log_path(real)}")


def _commit_first(real: str, timeout: float) -> list[str]:
    """Commit the drafts of a live mount with drafts, each once its files being
    written are closed (up to `timeout` s); the lines of those that could not be
    (none for a read-only or stale mount, which has nothing to commit or cannot be
    asked)."""
    try:
        address = os.getxattr(real, CONTROL_XATTR).decode()
    except OSError:
        return []
    flush_mount(real)
    return commit_drafts(address, None, wait=timeout, unmount=True)


def _daemon_pid(real: str) -> int | None:
    """From our state dir, else from the mount itself (a mount started with
    another state dir, e.g. by systemd); None for a stale mount."""
    rec = read_record(real)
    if rec and _alive(int(rec["pid"])):
        return int(rec["pid"])
    result: list[int] = []

    def ask() -> None:
        with contextlib.suppress(OSError, ValueError):
            result.append(int(os.getxattr(real, "user.artifactfs.pid")))
    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(2.0)
    return result[0] if result and _alive(result[0]) else None
