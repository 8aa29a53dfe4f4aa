"""Remembered digests of local files, so that putting an unchanged folder again
does not read every byte again (like git's index).

An entry is keyed by (device, inode) and used only while the file's size, mtime
and ctime are all unchanged; ctime cannot be set by a program, so any write or
chmod invalidates it.  A file whose mtime or ctime is less than RACY_NS before
the moment it was hashed is not remembered: a later write in the same timestamp
tick could leave its times unchanged.  Files on FUSE filesystems are never
cached: their inode numbers and times are whatever the daemon says (a remount
may show another file with the same ones).  The cache is private (0700 directory),
shared by the user's processes (SQLite, WAL), and purely an optimisation: if it
cannot be opened or written, everything is hashed as before.  Its digests are
trusted (a put stores what they say), so the cache is used only in a directory of
the user's that nobody else may write to, from a regular file of the user's
(not through a symlink): else it is off, with one warning naming why."""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading

from ..errors import UsageError
from ..paths import private_dir

RACY_NS = 2_000_000_000
MAX_ROWS = 2_000_000
_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER,
    digest TEXT, chunks TEXT, hashed_ns INTEGER, PRIMARY KEY (dev, ino))"""

Stat = os.stat_result
Remembered = tuple[str, tuple[str, ...]]   # (W&B digest, chunk keys)
log = logging.getLogger("artifactfs.put")


def default_path() -> str | None:
    """$ARTIFACTFS_HASH_CACHE, else under $XDG_CACHE_HOME; None when set to 'off'."""
    path = os.environ.get("ARTIFACTFS_HASH_CACHE")
    if path == "off":
        return None
    if path:
        return path
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "artifactfs", "file-digests.sqlite")


def _prefetch(path: str) -> None:
    """Start reading the database in the background: lookups of a cold cache
    then wait for one sequential read instead of many small random ones."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _fuse_devices() -> frozenset[int]:
    """Device numbers of the FUSE filesystems mounted now (from /proc/self/mountinfo)."""
    out = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields, _, rest = line.partition(" - ")
                major, _, minor = fields.split()[2].partition(":")
                if rest.split(" ", 1)[0].startswith("fuse"):
                    out.add(os.makedev(int(major), int(minor)))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(out)


def _own_file(path: str) -> None:
    """Create the cache file if missing (0600); UsageError unless it is a regular
    file of this user's (never a symlink: O_NOFOLLOW)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise UsageError(f"hash cache: {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UsageError(f"hash cache: {path} is not a regular file of this user")
    finally:
        os.close(fd)


class HashCache:
    """Lookups from many threads; new entries are written in one transaction by flush()."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._pending: list[tuple] = []
        self._untrusted = _fuse_devices()

    @classmethod
    def open(cls, path: str | None = None) -> "HashCache | None":
        path = path or default_path()
        if path is None:
            return None
        try:
            private_dir(os.path.dirname(os.path.abspath(path)), "hash cache")
            _own_file(path)
            _prefetch(path)
            db = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("BEGIN")  # one read snapshot for all lookups: no per-query locking
        except UsageError as e:
            log.warning("not using the file digest cache: %s", e)
            return None
        except (OSError, sqlite3.Error):
            return None
        return cls(db)

    def lookup(self, stats: list[Stat]) -> list[Remembered | None]:
        """The digests remembered for each exact file state (None: unknown), in one query."""
        out: list[Remembered | None] = [None] * len(stats)
        want = {(st.st_dev, st.st_ino): i for i, st in enumerate(stats) if st.st_dev not in self._untrusted}
        rows = []
        with self._lock:
            try:
                for dev in {d for d, _ in want}:
                    inos = [ino for d, ino in want if d == dev]
                    rows += [(dev, *r) for r in self._db.execute(
                        "SELECT ino, size, mtime_ns, ctime_ns, digest, chunks FROM files "
                        f"WHERE dev=? AND ino IN ({','.join('?' * len(inos))})", [dev, *inos])]
            except sqlite3.Error:
                return out
        for dev, ino, size, mtime_ns, ctime_ns, digest, chunks in rows:
            i = want[(dev, ino)]
            st = stats[i]
            if (size, mtime_ns, ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                out[i] = digest, tuple(chunks.split(",")) if chunks else ()
        return out

    def remember(self, st: Stat, digests: Remembered, hashed_ns: int) -> None:
        """Queue an entry for a file hashed from time `hashed_ns` on, unless racy."""
        if max(st.st_mtime_ns, st.st_ctime_ns) >= hashed_ns - RACY_NS or st.st_dev in self._untrusted:
            return
        with self._lock:
            self._pending.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                  digests[0], ",".join(digests[1]), hashed_ns))

    def flush(self) -> None:
        """Write queued entries (dropping the oldest beyond MAX_ROWS) and close."""
        with self._lock:
            rows, self._pending = self._pending, []
            try:
                self._db.execute("COMMIT")
                if rows:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", rows)
                    excess = self._db.execute("SELECT count(*) FROM files").fetchone()[0] - MAX_ROWS
                    if excess > 0:
                        self._db.execute("DELETE FROM files WHERE rowid IN "
                                         "(SELECT rowid FROM files ORDER BY hashed_ns LIMIT ?)", (excess,))
                    self._db.execute("COMMIT")
            except sqlite3.Error:
                pass  # only an optimisation: the next put hashes these files again
            finally:
                self._db.close()
