"""Helpers shared by the draft tests: publishing versions directly through the
registry (another writer), reading versions and folders back as
{path: (bytes, executable)} for exact comparison, and driving a draft engine
by path (Paths)."""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable

from artifactfs.chunks import download, upload
from artifactfs.drafts import filedata
from artifactfs.drafts.engine import Draft
from artifactfs.drafts.inode import Attr, Inode
from artifactfs.drafts.lifecycle import fetch_from_store, open_draft
from artifactfs.drafts.slots import drafts_dir
from artifactfs.registry.manifest import apply_changes, artifact_digest, walk
from artifactfs.registry.versions import Registry

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
        entries[path] = upload.upload_file(reg, local)
    new = apply_changes(reg, root, entries)
    info, _ = reg.commit(project, name, "dataset", new, artifact_digest(walk(reg, new.tree)), base=latest)
    return info.version


def version_files(reg: Registry, name: str, version: int, project: str = "proj") -> Files:
    info = reg.version(project, name, version)
    out = {}
    for path, entry in walk(reg, info.root):
        data = b"".join(download.read_chunk(reg, entry, i, path) for i in range(len(entry.chunks)))
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


def open_test_draft(reg: Registry, name: str = "ds", project: str = "proj") -> Draft:
    """The draft of `name` in this process's drafts slot (fetching from the store)."""
    where = drafts_dir(reg.identity, reg.store.url, project)
    return open_draft(reg, where, project, name, fetch_from_store(reg), (os.getuid(), os.getgid()))


class Paths:
    """The engine's inode operations driven by path, as a program would through the
    mount (tests only: the mount resolves one name at a time)."""

    def __init__(self, draft: Draft):
        self.draft = draft

    def node(self, path: str) -> Inode | None:
        try:
            return self._need(path)
        except OSError:
            return None

    def _need(self, path: str) -> Inode:
        """The inode at `path`, or the errno a lookup gives (ENOENT, ENOTDIR)."""
        ino = self.draft.root
        for name in [p for p in path.split("/") if p]:
            ino = self.draft.lookup(ino, name)
        return ino

    def _parent(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rpartition("/")
        d = self._need(head)
        if not d.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", head)
        return d, name

    def stat(self, path: str) -> Attr | None:
        ino = self.node(path)
        return None if ino is None else filedata.attributes(self.draft, ino)

    def listdir(self, path: str = "") -> list[str]:
        return [name for name, _ in self.draft.readdir(self._need(path))]

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        d, name = self._parent(path)
        self.draft.make(d, name, stat.S_IFDIR | mode, os.getuid(), os.getgid())

    def makedirs(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            if self.node("/".join(parts[:i])) is None:
                self.mkdir("/".join(parts[:i]))

    def create(self, path: str, mode: int = 0o644) -> Inode:
        d, name = self._parent(path)
        return self.draft.make(d, name, stat.S_IFREG | mode, os.getuid(), os.getgid())

    def write(self, path: str, data: bytes, offset: int = 0, trunc: bool = False) -> None:
        """Write all of `data` into a file, made (with its folders) when missing."""
        if "/" in path:
            self.makedirs(path.rsplit("/", 1)[0])
        try:
            ino = self._need(path)
        except FileNotFoundError:
            ino = self.create(path)
        if trunc:
            filedata.truncate(self.draft, ino, 0)
        done = 0
        while done < len(data):  # as a program does after a short write (a full disk: the next one raises)
            done += filedata.write(self.draft, ino, offset + done, data[done:])

    def read(self, path: str) -> bytes:
        ino = self._need(path)
        data = filedata.read(self.draft, ino, 0, 1 << 30)
        if data is None:
            assert ino.base is not None
            with tempfile.TemporaryFile() as f:
                self.draft.fetch(ino.base, f.fileno())
                f.seek(0)
                return f.read()
        return data

    def unlink(self, path: str) -> None:
        self.draft.unlink(*self._parent(path))

    def rmdir(self, path: str) -> None:
        self.draft.rmdir(*self._parent(path))

    def rename(self, old: str, new: str, noreplace: bool = False) -> None:
        od, on = self._parent(old)
        nd, nn = self._parent(new)
        self.draft.rename(od, on, nd, nn, noreplace)

    def link(self, old: str, new: str) -> None:
        self.draft.link(self._need(old), *self._parent(new))

    def symlink(self, target: str, path: str) -> None:
        d, name = self._parent(path)
        self.draft.make(d, name, stat.S_IFLNK | 0o777, os.getuid(), os.getgid(), target=target)

    def chmod(self, path: str, mode: int) -> None:
        self.draft.set_attrs(self._need(path), mode=mode)

    def truncate(self, path: str, size: int) -> None:
        filedata.truncate(self.draft, self._need(path), size)

    def staged(self) -> list[str]:
        """The data files on disk (one per staged inode)."""
        return sorted(os.listdir(self.draft.data))
