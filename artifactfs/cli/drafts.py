"""`artifactfs sync`: commit drafts of a running mount as new versions;
`artifactfs status`: what sync would publish; `artifactfs discard`: throw
away their changes.

PATH (default: the current directory) is a draft folder (or a folder inside one),
a collection folder, or the mountpoint itself (every draft with changes).  The
daemon is reached through its control socket (mount/control.py); sync returns
only when every version is durable and prints one line per collection:
`NAME:vN`, or `NAME:vM (unchanged)` when the content equals latest."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

import click

from ..drafts.syncclient import request
from ..errors import ArtifactfsError
from ..mount.state import FSTYPE, mounts
from ..registry.names import check_alias, check_name

CONTROL_XATTR = "user.artifactfs.control"
_LIBC = ctypes.CDLL(None, use_errno=True)


def _mountpoints() -> list[str]:
    return [m.mountpoint for m in mounts() if m.fstype == FSTYPE]


def locate(path: str, points: list[str]) -> tuple[str, str | None]:
    """(mountpoint, collection or None for every dirty draft) for a PATH argument."""
    real = os.path.realpath(path)
    best = max((m for m in points if real == m or real.startswith(m.rstrip("/") + "/")), key=len, default=None)
    if best is None:
        raise ArtifactfsError(f"{path} is not inside an artifactfs mount")
    parts = [p for p in os.path.relpath(real, best).split("/") if p not in ("", ".")]
    try:
        os.lstat(path)
    except FileNotFoundError:
        raise ArtifactfsError(f"{path}: no such file or folder") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise ArtifactfsError(_gone(best)) from None
        raise
    if not parts:
        return best, None
    if len(parts) > 1 and parts[1] != "draft":
        raise ArtifactfsError(f"{path} is not a draft folder, a collection folder or the mountpoint")
    return best, parts[0]


def _gone(point: str) -> str:
    return (f"the daemon of {point} is gone (its drafts are kept on disk): "
            f"`artifactfs mount {point}` serves them again")


def _metadata(pairs: tuple[str, ...]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ArtifactfsError(f"--metadata {pair!r}: use KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value  # plain text
    return out


@click.command(name="sync")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--alias", "aliases", multiple=True, metavar="A", help="Alias for the new version (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="T", help="Tag for the new version (repeatable).")
@click.option("--description", default=None, metavar="D", help="Description of the new version.")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE",
              help="Metadata of the new version (repeatable; VALUE is JSON or text).")
@click.option("--timeout", metavar="SECONDS", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="How long files of a draft being written may take to be closed before that draft is "
                   "left unpublished.")
def sync_cmd(paths: tuple[str, ...], aliases: tuple[str, ...], tags: tuple[str, ...],
             description: str | None, metadata: tuple[str, ...], timeout: float) -> None:
    """Commit drafts as new versions; returns once they are durable in the store.

    A draft with files open for writing that changed since they were opened is
    published once they are closed (waiting up to --timeout), else not at all
    (exit 1).  A sync of the whole mountpoint skips drafts recovered after a
    crash (a note each, exit 1): name the draft to publish one."""
    for a in aliases:
        check_alias(a)
    for t in tags:
        check_name(t, "tag")
    meta = _metadata(metadata)
    failures = 0
    for address, collections in _targets(paths or (os.getcwd(),)):
        failures += len(commit_drafts(address, collections, {"aliases": list(aliases), "tags": list(tags),
                                                         "description": description, "metadata": meta},
                                      wait=timeout))
    if failures:
        sys.exit(1)


@click.command(name="discard")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
def discard_cmd(paths: tuple[str, ...]) -> None:
    """Throw away every change of drafts: each then shows its collection's latest version."""
    failures = 0
    for address, collections in _targets(paths):
        if collections is None:
            raise ArtifactfsError("discard takes draft or collection folders, not a whole mount")
        failures += len(report(request(address, {"op": "discard", "collections": collections})))
    if failures:
        sys.exit(1)


@click.command(name="status")
@click.argument("paths", nargs=-1, type=click.Path())
def status_cmd(paths: tuple[str, ...]) -> None:
    """Show what sync would publish from drafts: A added, M changed, D removed (default: the current directory)."""
    failures = 0
    for address, collections in _targets(paths or (os.getcwd(),)):
        failures += len(report(request(address, {"op": "status", "collections": collections})))
    if failures:
        sys.exit(1)


def flush_mount(point: str) -> None:
    """syncfs(2) of the mount: the kernel writes back what programs wrote through a
    shared mmap (numpy.memmap, torch's mmap'd saves) and did not msync yet, so that
    the daemon's commit sees the bytes the draft's files show.  Without it a sync
    published what those files held before such writes."""
    fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise ArtifactfsError(f"{point}: files written through mmap could not be written back before the "
                                  f"commit: {os.strerror(code)}")
    finally:
        os.close(fd)


def _targets(paths: tuple[str, ...]) -> list[tuple[str, list[str] | None]]:
    """(control socket address, collections or None for every draft with changes) per mount."""
    points = _mountpoints()
    targets: dict[str, list[str] | None] = {}
    for path in paths:
        point, collection = locate(path, points)
        if collection is None or targets.get(point, []) is None:
            targets[point] = None
        elif collection not in targets.setdefault(point, []):  # type: ignore[operator]
            targets[point].append(collection)  # type: ignore[union-attr]
    out = []
    for point, collections in targets.items():
        try:
            address = os.getxattr(point, CONTROL_XATTR).decode()
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                raise ArtifactfsError(_gone(point)) from None
            raise ArtifactfsError(f"{point} is mounted read-only or by a daemon without drafts") from None
        flush_mount(point)
        out.append((address, collections))
    return out


def commit_drafts(address: str, collections: list[str] | None, attrs: dict | None = None,
                  wait: float = 0, unmount: bool = False) -> list[str]:
    """Ask the daemon at control socket `address` to commit the drafts of
    `collections` (None: every draft with changes), with the attributes of `sync`,
    each once its files being written are closed (up to `wait` s; what it waits for
    is said on stderr); print one line per version on stdout and one `Error:` line
    per draft that could not be committed (a conflict, an unreachable store, files
    still being written; at `unmount` a draft recovered after a crash) or `note:`
    line per draft skipped (recovered, when every draft was asked) on stderr;
    return those lines (the drafts not committed).  ArtifactfsError if the daemon cannot be
    asked at all."""
    return report(request(address, {"op": "sync", "collections": collections, "unmount": unmount, "wait": wait,
                                    **(attrs or {})}, lambda text: click.echo(text, err=True)))


def report(reply: dict, shown: frozenset[str] = frozenset()) -> list[str]:
    """Print a control reply's lines (stdout), errors and skipped drafts (stderr),
    except lines already `shown`; the lines of what was not done."""
    if "error" in reply:
        raise ArtifactfsError(reply["error"])
    failed = []
    for r in reply["results"]:
        if "line" in r:
            click.echo(r["line"])
            if r.get("note"):
                click.echo(f"note: {r['note']}", err=True)
            continue
        failed.append(f"note: {r['skipped']}" if "skipped" in r else f"Error: {r['error']}")
        if failed[-1] not in shown:
            click.echo(failed[-1], err=True)
    return failed
