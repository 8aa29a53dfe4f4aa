"""Where mounts leave traces for other processes: the private state directory
(logs, one record per mountpoint with the daemon's pid), the kernel's mount
table, and systemd's notification socket."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass
from urllib.parse import quote

from ..paths import state_dir

FSTYPE = "fuse.artifactfs"


def real_mountpoint(path: str) -> str:
    """The canonical path of a mountpoint, resolving its parents but not the
    mountpoint itself: a stat of a hung mount would never return."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _escaped(mountpoint: str) -> str:
    """File name for a mountpoint on this host, in this mount namespace
    (host_key): one state dir may be shared by machines (a home on NFS) or by
    containers, where the same path is another mount.  Callers pass the real
    path: resolving it here could stat a mount whose daemon is this very (not
    yet serving) process."""
    return f"{quote(mountpoint, safe='')}@{host_key()}"


def host_key() -> str:
    """'<hostname>-<mount namespace inode>': which mount a mountpoint path means."""
    try:
        ns = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        ns = 0
    return f"{quote(socket.gethostname(), safe='')}-{ns}"


def record_path(mountpoint: str) -> str:
    d = os.path.join(state_dir(), "mounts")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return os.path.join(d, _escaped(mountpoint) + ".json")


def log_path(mountpoint: str) -> str:
    d = os.path.join(state_dir(), "logs")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return os.path.join(d, _escaped(mountpoint) + ".log")


def write_record(mountpoint: str, **fields: object) -> None:
    path = record_path(mountpoint)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(fields, f)
    os.replace(tmp, path)


def read_record(mountpoint: str) -> dict | None:
    try:
        with open(record_path(mountpoint)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_record(mountpoint: str, pid: int) -> None:
    """Remove the record if it is still ours (a newer mount may have replaced it)."""
    rec = read_record(mountpoint)
    if rec is not None and rec.get("pid") == pid:
        try:
            os.unlink(record_path(mountpoint))
        except FileNotFoundError:
            pass


def _outcome_path(mountpoint: str) -> str:
    return record_path(mountpoint)[:-len(".json")] + ".stopped.json"


def write_outcome(mountpoint: str, pid: int, results: list[dict]) -> None:
    """What the daemon `pid` did with the drafts with changes as it stopped (one
    result per draft, as the control socket gives them), for `artifactfs umount`."""
    path = _outcome_path(mountpoint)
    with open(os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump({"pid": pid, "results": results}, f)
    os.replace(path + ".tmp", path)


def take_outcome(mountpoint: str, pid: int) -> list[dict] | None:
    """write_outcome's results of daemon `pid` (removed once read), or None."""
    path = _outcome_path(mountpoint)
    try:
        with open(path) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    if found.get("pid") != pid:
        return None
    os.unlink(path)
    return list(found.get("results") or ())


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    dev: tuple[int, int]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountEntry]:
    """The mount table of this process's namespace (never touches a FUSE mount)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            major, minor = fields[2].split(":")
            out.append(MountEntry(_unescape(fields[4]), rfields[0], _unescape(rfields[1]),
                                  (int(major), int(minor))))
    return out


def find_mount(mountpoint: str) -> MountEntry | None:
    """The topmost mount at the real path `mountpoint`, if any."""
    found = None
    for m in mounts():
        if m.mountpoint == mountpoint:
            found = m
    return found


FUSECTL = "/sys/fs/fuse/connections"


def abort_connection(dev: tuple[int, int]) -> bool:
    """Abort the FUSE connection of the mount whose device is `dev` (fusectl's
    `abort`, mounted first if it is not and we may): every request waiting on
    its daemon fails with ENOTCONN and a daemon stuck in the kernel can exit.
    False when it could not be done (fusectl absent, not ours)."""
    conn = os.path.join(FUSECTL, str(dev[1]))
    if not os.path.isdir(conn):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], capture_output=True)
    try:
        fd = os.open(os.path.join(conn, "abort"), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, b"1")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def sd_notify(message: str) -> None:
    """Tell systemd about our state (READY=1, STOPPING=1) when run as a Type=notify unit."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError:
        pass  # systemd went away; nothing to tell
