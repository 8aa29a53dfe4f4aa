"""Helpers shared by the draft tests: publishing versions directly through the
registry (another writer) and reading versions and folders back as
{path: (bytes, executable)} for exact comparison."""
from __future__ import annotations

import os
import stat
from collections.abc import Callable

from artifactfs import transfer
from artifactfs.manifest import apply_changes, artifact_digest, walk
from artifactfs.registry import Registry

Files = dict[str, tuple[bytes, bool]]


def errno_of(fn: Callable[[], object]) -> int | None:
    """The errno an operation fails with, or None when it succeeds."""
    try:
        fn()
        return None
    except OSError as e:
        return e.errno


def write_files(root: str, files: dict[str, bytes | tuple[bytes, bool]]) -> None:
    """Make a plain folder holding `files` (path -> content or (content, executable))."""
    for path, value in files.items():
        data, exe = value if isinstance(value, tuple) else (value, False)
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, 0o755 if exe else 0o644)


def publish(reg: Registry, tmp: str, name: str, changes: dict[str, bytes | tuple[bytes, bool] | None],
            project: str = "proj") -> int:
    """Commit `changes` (path -> content, (content, executable) or None) onto latest
    as another writer would; returns the version number."""
    latest = reg.latest(project, name)
    root = reg.version(project, name, latest).root if latest is not None else None
    entries = {}
    os.makedirs(tmp, exist_ok=True)
    for i, (path, value) in enumerate(sorted(changes.items())):
        if value is None:
            entries[path] = None
            continue
        data, exe = value if isinstance(value, tuple) else (value, False)
        local = os.path.join(tmp, f"f{i}")
        with open(local, "wb") as f:
            f.write(data)
        os.chmod(local, 0o755 if exe else 0o644)
        entries[path] = transfer.upload_file(reg, local)
    new = apply_changes(reg, root, entries)
    info, _ = reg.commit(project, name, "dataset", new, artifact_digest(walk(reg, new.tree)), base=latest)
    return info.version


def version_files(reg: Registry, name: str, version: int, project: str = "proj") -> Files:
    info = reg.version(project, name, version)
    out = {}
    for path, entry in walk(reg, info.root):
        data = b"".join(transfer.read_chunk(reg, entry, i, path) for i in range(len(entry.chunks)))
        out[path] = (data, entry.executable)
    return out


def dir_files(root: str) -> Files:
    """Regular files below root (empty folders are not part of a version)."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            full = os.path.join(dirpath, fn)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, root)] = (f.read(), bool(st.st_mode & 0o100))
    return out
