"""Real mounts for tests: run `artifactfs mount` on a store and a fresh empty
mountpoint, and ALWAYS unmount and stop the daemon afterwards, even when the
test fails or the daemon hangs.

    from mountutil import mounted, need_fuse
    def test_x(tmp_path):
        with mounted(store_url, tmp_path / "mnt", "--refresh", "1") as m:
            os.listdir(m.path); m.stats()["bytes_fetched"]

or the fixture `mount_factory` (import it into the test module), which unmounts
everything it mounted at teardown:  m = mount_factory(store_url, "--cache-size", "20M")."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import skip_or_fail

from artifactfs.mount import state

UMOUNT_TIMEOUT = 20.0


def need_fuse() -> None:
    """Skip (fail in CI) where FUSE cannot be used."""
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        skip_or_fail("FUSE is not available (/dev/fuse and fusermount3 are needed)")


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
        check: bool = False) -> subprocess.CompletedProcess:
    """Run the artifactfs command line in a child process."""
    done = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"artifactfs {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


@dataclass
class Mount:
    path: str
    store: str
    env: dict[str, str]

    def p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def stats(self) -> dict:
        """The daemon's cache and reader counters (xattr user.artifactfs.stats on the root)."""
        return json.loads(os.getxattr(self.path, "user.artifactfs.stats"))

    @property
    def pid(self) -> int:
        return int(os.getxattr(self.path, "user.artifactfs.pid"))

    @property
    def log(self) -> str:
        logs = Path(self.env["XDG_STATE_HOME"], "artifactfs", "logs")
        return "".join(p.read_text() for p in logs.glob("*.log")) if logs.exists() else ""

    def umount(self, *args: str) -> subprocess.CompletedProcess:
        return cli("umount", *args, self.path, env=self.env, timeout=UMOUNT_TIMEOUT + 40)


def _real(path: str) -> str:
    """Canonical path without stat-ing the (possibly hung) mount itself."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == _real(path) for line in f)


def _daemon_pid(env: dict[str, str], path: str) -> int | None:
    rec = Path(env["XDG_STATE_HOME"], "artifactfs", "mounts", quote(_real(path), safe="") + ".json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads(rec.read_text())["pid"])
    return None


def abort_connection(path: str) -> bool:
    """Abort the FUSE connection of the mount at `path` (state.abort_connection):
    every request waiting on the daemon fails with ENOTCONN, so a hung daemon
    cannot hang the tests."""
    with open("/proc/self/mountinfo") as f:
        devs = [line.split()[2] for line in f if line.split()[4] == _real(path)]
    if not devs:
        return False
    major, minor = devs[-1].split(":")
    return state.abort_connection((int(major), int(minor)))


def force_unmount(path: str, env: dict[str, str]) -> None:
    """Last resort: abort the connection, detach the mount and kill its daemon."""
    pid = _daemon_pid(env, path)
    abort_connection(path)
    subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def mounted(store: str, mountpoint: str | os.PathLike, *args: str, project: str = "proj",
            env: dict[str, str] | None = None) -> Iterator[Mount]:
    """Mount `store` at `mountpoint` (created if missing) with extra `args`; always unmount."""
    need_fuse()
    path = str(mountpoint)
    os.makedirs(path, exist_ok=True)
    env = dict(env or os.environ)
    env.setdefault("XDG_STATE_HOME", os.path.join(os.path.dirname(os.path.abspath(path)),
                                                  f".state-{os.path.basename(path)}"))
    done = cli("--store", store, "--project", project, "mount", path, *args, env=env)
    if done.returncode != 0:
        force_unmount(path, env)
        raise AssertionError(f"artifactfs mount failed ({done.returncode}): {done.stderr}")
    m = Mount(path, store, env)
    try:
        yield m
    finally:
        if is_mounted(path):
            try:
                m.umount("--timeout", "5")
            except subprocess.TimeoutExpired:
                pass
            if is_mounted(path):
                force_unmount(path, env)


@pytest.fixture
def mount_factory(tmp_path) -> Iterator[Callable[..., Mount]]:
    """mount_factory(store, *args, project="proj", name="mnt") -> Mount; all unmounted at teardown."""
    with contextlib.ExitStack() as stack:
        def make(store: str, *args: str, project: str = "proj", name: str = "mnt") -> Mount:
            return stack.enter_context(mounted(store, tmp_path / name, *args, project=project))
        yield make


def kill_daemon(m: Mount) -> None:
    """SIGKILL the daemon of mount `m` (a crash) and clear its dead mount."""
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), 60, "the daemon to die")
    force_unmount(m.path, m.env)
    wait_for(lambda: not is_mounted(m.path), 60, "the dead mount to go")


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until predicate() is true; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start
