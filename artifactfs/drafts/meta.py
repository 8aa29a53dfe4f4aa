"""The persistent half of a draft: its inodes, directory entries, state and
clean-file stamps in one SQLite database (meta.db, WAL journal).

Every change of the namespace is one transaction, committed before the program
is answered: a process killed at any moment (SIGKILL) leaves the database as it
was after the last answered change, since committed WAL pages are in the
kernel's page cache.  fsync(2) of a draft file also syncs the WAL (sync()), so
what a program fsynced survives a power cut too.

The connection holds the database locked from its open to its close
(locking_mode EXCLUSIVE: only the process holding the drafts slot opens a
draft, slots.py), so a transaction takes no file lock and the WAL index lives
in the process's memory, not in a shared -shm file: 6 fcntl(2) calls less
per created file.  Whoever opens a MetaDB must close it, also when what
follows the open fails (else the draft stays locked until it is collected).

Tables:
  inodes(id, mode, uid, gid, nlink, rdev, atime, mtime, ctime, staged, base, tree, target, token)
      mode is st_mode with the file type; times are integer ns; staged=1 when the
      file's bytes (and size, atime, mtime) are in data/<id>; base is the JSON
      FileEntry a regular file shows while not staged; tree the base sub-tree a
      directory overlays (NULL: a plain folder); target a symlink's target;
      token the inode's identity as shown (st_ino), kept from its virtual days.
  dentries(parent, name, ino)   ino NULL is a whiteout: hides the base entry `name`
  state(key, value)             'draft': the DraftState JSON
  clean(ino, stamp)             stamps of staged files hashed by the last commit

The names of each folder's rows are also kept in memory once looked for (up to
NAMES_KEPT names per draft), so that a lookup of a name that is not there, the
first request of every file a program creates, is answered without a query
(absent())."""
from __future__ import annotations

import errno
import json
import operator
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS inodes (
  id INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
  nlink INTEGER NOT NULL, rdev INTEGER NOT NULL, atime INTEGER NOT NULL, mtime INTEGER NOT NULL,
  ctime INTEGER NOT NULL, staged INTEGER NOT NULL, base TEXT, tree TEXT, target BLOB, token TEXT);
CREATE TABLE IF NOT EXISTS dentries (
  parent INTEGER NOT NULL, name TEXT NOT NULL, ino INTEGER, PRIMARY KEY (parent, name)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dentries_ino ON dentries (ino);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clean (ino INTEGER PRIMARY KEY, stamp TEXT NOT NULL);
"""
DB_FILE = "meta.db"
PAGE_SIZE = 1024  # bytes; a new file's four changed pages are 4 KiB of WAL, not 16 (meta.db made before: 4096)
WAL_CHECKPOINT_BYTES = 16 << 20  # of WAL between checkpoints, ~4,000 files created (SQLite's default: 1000 pages)
NAMES_KEPT = 200_000  # folder names kept in memory per draft (~100 B each)
COLUMNS = ("id", "mode", "uid", "gid", "nlink", "rdev", "atime", "mtime", "ctime", "staged", "base", "tree",
           "target", "token")


_PUT = f"INSERT OR REPLACE INTO inodes ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"
_values = operator.attrgetter(*COLUMNS)  # a Row's values in COLUMNS order, as a tuple


@dataclass
class Row:
    """One inodes row, as stored."""

    id: int
    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int
    atime: int
    mtime: int
    ctime: int
    staged: int
    base: str | None
    tree: str | None
    target: bytes | str | None  # bytes: a target need not be UTF-8
    token: str | None


def _enospc(e: sqlite3.Error) -> OSError:
    if "full" in str(e):
        return OSError(errno.ENOSPC, "no space left for the draft's database")
    return OSError(errno.EIO, f"draft database: {e}")


class MetaDB:
    """One draft's database.  Methods are safe from any thread: one lock
    serializes them (the draft engine holds it across a whole change)."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (only a new file takes it)
            # (before the first WAL access; a killed process's WAL is recovered at the next open)
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page}")
            self._db.executescript(SCHEMA)
        except BaseException:
            self._db.close()  # (else it keeps the exclusive lock until collected)
            raise
        os.chmod(path, 0o600)
        self._names: dict[int, set[str]] = {}  # folder id -> the names of all its rows (whiteouts too)
        self._kept = 0  # names in self._names, at most NAMES_KEPT
        self._too_many: set[int] = set()  # folders whose names would not fit: always queried

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One atomic change; rolled back (and raised as OSError) on any error."""
        with self.lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _enospc(e) from None
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as e:
                self._forget_names()  # (what they learnt inside the transaction may be undone)
                if self._db.in_transaction:  # (SQLite may have rolled back itself: a full disk)
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise _enospc(e) from None
                raise

    def sync(self) -> None:
        """Make every committed change durable (fsync of the WAL)."""
        with self.lock:
            for suffix in ("-wal", ""):
                try:
                    fd = os.open(self.path + suffix, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    # -- inodes -------------------------------------------------------------------------
    def row(self, ino: int) -> Row | None:
        with self.lock:
            r = self._db.execute(f"SELECT {','.join(COLUMNS)} FROM inodes WHERE id=?", (ino,)).fetchone()
        return Row(*r) if r else None

    def put(self, row: Row) -> None:
        with self.lock:
            self._db.execute(_PUT, _values(row))

    def update(self, ino: int, **values: object) -> None:
        with self.lock:
            sets = ",".join(f"{k}=?" for k in values)
            self._db.execute(f"UPDATE inodes SET {sets} WHERE id=?", (*values.values(), ino))

    def delete(self, ino: int) -> None:
        with self.lock:
            self._db.execute("DELETE FROM inodes WHERE id=?", (ino,))
            self._db.execute("DELETE FROM dentries WHERE parent=?", (ino,))
            self._db.execute("DELETE FROM clean WHERE ino=?", (ino,))
            self._drop_names(ino)

    def max_id(self) -> int:
        with self.lock:
            return self._db.execute("SELECT coalesce(max(id), 0) FROM inodes").fetchone()[0]

    def orphans(self) -> list[int]:
        """Inodes with no name left (unlinked while open when the process ended)."""
        with self.lock:
            return [r[0] for r in self._db.execute("SELECT id FROM inodes WHERE nlink=0")]

    def staged_ids(self) -> set[int]:
        with self.lock:
            return {r[0] for r in self._db.execute("SELECT id FROM inodes WHERE staged=1")}

    # -- directory entries --------------------------------------------------------------
    def dentry(self, parent: int, name: str) -> tuple[bool, int | None]:
        """(found, ino): found with ino None is a whiteout."""
        with self.lock:
            if self.absent(parent, name):
                return False, None
            r = self._db.execute("SELECT ino FROM dentries WHERE parent=? AND name=?", (parent, name)).fetchone()
            if r is None:
                self._learn_names(parent)
        return (False, None) if r is None else (True, r[0])

    def dentries(self, parent: int) -> list[tuple[str, int | None]]:
        with self.lock:
            return list(self._db.execute("SELECT name, ino FROM dentries WHERE parent=? ORDER BY name", (parent,)))

    def children(self, parent: int) -> list[tuple[str, Row | None]]:
        """The entries of a folder with their inodes' rows (None: a whiteout), by name."""
        cols = ",".join("i." + c for c in COLUMNS)
        with self.lock:
            found = list(self._db.execute(
                f"SELECT d.name, {cols} FROM dentries d LEFT JOIN inodes i ON i.id = d.ino "
                "WHERE d.parent=? ORDER BY d.name", (parent,)))
        return [(r[0], Row(*r[1:]) if r[1] is not None else None) for r in found]

    def set_dentry(self, parent: int, name: str, ino: int | None) -> None:
        with self.lock:
            self._db.execute("INSERT OR REPLACE INTO dentries (parent, name, ino) VALUES (?,?,?)", (parent, name, ino))
            names = self._names.get(parent)
            if names is not None and name not in names:
                if self._kept < NAMES_KEPT:
                    names.add(name)
                    self._kept += 1
                else:
                    self._drop_names(parent)
                    self._too_many.add(parent)

    def drop_dentry(self, parent: int, name: str) -> None:
        with self.lock:
            self._db.execute("DELETE FROM dentries WHERE parent=? AND name=?", (parent, name))
            names = self._names.get(parent)
            if names is not None and name in names:
                names.remove(name)
                self._kept -= 1

    def delete_entries(self, parent: int) -> None:
        """Drop every entry (whiteouts) of a folder being removed."""
        with self.lock:
            self._db.execute("DELETE FROM dentries WHERE parent=?", (parent,))
            self._drop_names(parent)

    # -- names kept in memory ----------------------------------------------------------
    def absent(self, parent: int, name: str) -> bool:
        """True when memory alone says folder `parent` has no row `name` (neither an
        entry nor a whiteout); False when it has one or memory does not know.  A
        caller without the lock must hold it (no waiting: lock.acquire(blocking=False))."""
        names = self._names.get(parent)
        return names is not None and name not in names

    def _learn_names(self, parent: int) -> None:
        """Keep the names of a folder's rows in memory, if they fit (lock held)."""
        if parent in self._names or parent in self._too_many:
            return
        room = NAMES_KEPT - self._kept
        found = [r[0] for r in self._db.execute("SELECT name FROM dentries WHERE parent=? LIMIT ?",
                                                (parent, room + 1))]
        if len(found) > room:
            self._too_many.add(parent)
            return
        self._names[parent] = set(found)
        self._kept += len(found)

    def _drop_names(self, parent: int) -> None:
        names = self._names.pop(parent, None)
        if names is not None:
            self._kept -= len(names)
        self._too_many.discard(parent)

    def _forget_names(self) -> None:
        self._names.clear()
        self._too_many.clear()
        self._kept = 0

    def parent_of(self, ino: int) -> tuple[int, str] | None:
        """(parent, name) of a directory (directories have one name)."""
        with self.lock:
            r = self._db.execute("SELECT parent, name FROM dentries WHERE ino=? LIMIT 1", (ino,)).fetchone()
        return None if r is None else (r[0], r[1])

    def has_children(self, parent: int) -> bool:
        with self.lock:
            return self._db.execute("SELECT 1 FROM dentries WHERE parent=? AND ino IS NOT NULL LIMIT 1",
                                    (parent,)).fetchone() is not None

    # -- state and stamps --------------------------------------------------------------
    def get_state(self, key: str) -> dict | None:
        with self.lock:
            r = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return None if r is None else json.loads(r[0])

    def set_state(self, key: str, value: dict) -> None:
        with self.lock:
            self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?,?)",
                             (key, json.dumps(value, sort_keys=True)))

    def stamps(self) -> dict[int, list]:
        with self.lock:
            return {r[0]: json.loads(r[1]) for r in self._db.execute("SELECT ino, stamp FROM clean")}

    def set_stamps(self, stamps: dict[int, list]) -> None:
        with self.lock:
            self._db.execute("DELETE FROM clean")
            self._db.executemany("INSERT INTO clean (ino, stamp) VALUES (?,?)",
                                 [(k, json.dumps(v)) for k, v in stamps.items()])
