"""Moving file contents between local disk and the store: hash-and-upload,
download into a directory without ever leaving it, and verification."""
from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import xxhash

from .errors import ArtifactfsError, DigestMismatchError
from .manifest import CHUNK_SIZE, FileEntry, b64_digest
from .names import check_path
from .registry import Registry

WORKERS = 8
Progress = Callable[[int], None]


def _read_chunks(path: str) -> Iterable[bytes]:
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(CHUNK_SIZE)
            if not data:
                return
            yield data


def upload_file(registry: Registry | None, path: str, progress: Progress | None = None) -> FileEntry:
    """Hash a local file (W&B digest and per-chunk keys) and store its chunks
    unless present.  With registry=None it only hashes."""
    try:
        st = os.stat(path)
        whole = xxhash.xxh3_128()
        chunks: list[str] = []
        for data in _read_chunks(path):
            whole.update(data)
            key = xxhash.xxh3_128_hexdigest(data)
            chunks.append(key)
            if registry is not None:
                registry.put_blob(key, data)
            if progress:
                progress(len(data))
    except OSError as e:
        raise ArtifactfsError(f"cannot read {path}: {e.strerror}") from None
    size = sum(min(CHUNK_SIZE, st.st_size - i * CHUNK_SIZE) for i in range(len(chunks)))
    if len(chunks) == 1:
        chunks = [whole.hexdigest()]  # one chunk: its key is the file's own digest
    return FileEntry(b64_digest(whole.digest()), size, tuple(chunks), executable=bool(st.st_mode & 0o111))


def upload_many(registry: Registry | None, paths: list[str], progress: Progress | None = None) -> list[FileEntry]:
    """upload_file over many files, in parallel (file I/O and xxhash release the GIL)."""
    if len(paths) <= 1:
        return [upload_file(registry, p, progress) for p in paths]
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda p: upload_file(registry, p, progress), paths))


def read_chunk(registry: Registry, entry: FileEntry, index: int, where: str) -> bytes:
    """One verified chunk of a file; DigestMismatchError names the file."""
    key = entry.chunks[index]
    data = registry.get_blob(key)
    if xxhash.xxh3_128_hexdigest(data) != key or len(data) != entry.chunk_span(index)[1]:
        raise DigestMismatchError(f"{where}: stored data does not match its digest (blob {key})")
    return data


def safe_target(root: str, path: str) -> str:
    """Absolute path of artifact `path` inside `root`, refusing anything that would
    escape it: invalid paths, and symlinks on the way (never followed)."""
    check_path(path)
    root = os.path.realpath(root)
    cur = root
    for part in path.split("/")[:-1]:
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ArtifactfsError(f"cannot write {path}: {cur} is not a directory (symlink or file in the way)")
    target = os.path.join(cur, path.split("/")[-1])
    if os.path.islink(target) or os.path.isdir(target):
        raise ArtifactfsError(f"cannot write {path}: {target} is a symlink or directory")
    return target


def file_matches(path: str, entry: FileEntry) -> bool:
    """True when the local file has the entry's size and digest."""
    try:
        if os.path.getsize(path) != entry.size:
            return False
        return upload_file(None, path).digest == entry.digest
    except (OSError, ArtifactfsError):
        return False


def download_file(registry: Registry, root: str, path: str, entry: FileEntry,
                  progress: Progress | None = None) -> None:
    """Write one verified file into root (atomically: temp file, then rename)."""
    target = safe_target(root, path)
    if os.path.exists(target) and file_matches(target, entry):
        if progress:
            progress(entry.size)
        return
    tmp = os.path.join(os.path.dirname(target), f".artifactfs-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755 if entry.executable else 0o644)
    try:
        for i in range(len(entry.chunks)):
            data = read_chunk(registry, entry, i, path)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if progress:
                progress(len(data))
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
        raise


def download_many(registry: Registry, root: str, items: list[tuple[str, FileEntry]],
                  progress: Progress | None = None) -> None:
    os.makedirs(root, exist_ok=True)
    # Directories are made in one pass first so parallel workers do not race on mkdir.
    for path, _ in items:
        safe_target(root, path)
    with ThreadPoolExecutor(WORKERS) as pool:
        for f in [pool.submit(download_file, registry, root, p, e, progress) for p, e in items]:
            f.result()


def verify_dir(root: str, items: Iterable[tuple[str, FileEntry]]) -> list[str]:
    """Problems found comparing `root` with the entries: one line per bad file."""
    problems = []
    for path, entry in items:
        target = os.path.join(root, path)
        if not os.path.isfile(target) or os.path.islink(target):
            problems.append(f"{path}: missing")
        elif not file_matches(target, entry):
            problems.append(f"{path}: content does not match digest {entry.digest}")
    return problems
