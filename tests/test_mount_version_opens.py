"""OPEN of version files answered by the patched pyfuse3's native threads
(the default: mount/noopen.py OpenMode.NATIVE, third_party/pyfuse3: fastopen.c),
on real mounts as root, whom a file's 0444 mode does not stop: every open with
write access fails with EROFS at open(2), so no descriptor, and no writable
shared mmap, can change the kernel's page cache of an immutable version; a
read-only open is answered natively and its reads stay native; SQLite reads a
WAL database in a version; drafts' opens still reach Python."""
from __future__ import annotations

import errno
import mmap
import os
import sqlite3
import subprocess
import sys

import pytest
from conftest import randbytes, skip_or_fail
from mountutil import mount_factory  # noqa: F401 (fixture)
from test_mount_read import commit

from artifactfs import Artifact
from artifactfs.mount import noopen
from artifactfs.registry.versions import Registry

DATA = randbytes(64 * 1024)


@pytest.fixture(autouse=True)
def _root_and_native() -> None:
    if not noopen.NATIVE_AVAILABLE:
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    if os.geteuid() != 0:
        skip_or_fail("these tests are about root, whom the 0444 mode of a version file does not stop")


def _wal_database(folder: str) -> dict[str, bytes]:
    """The three files of a SQLite WAL database whose rows are still in the -wal
    file (copied while its writer has it open, as a checkpoint of a job would be)."""
    os.makedirs(folder)
    db = sqlite3.connect(os.path.join(folder, "x.db"))
    db.execute("pragma journal_mode=wal")
    db.execute("pragma wal_autocheckpoint=0")
    db.execute("create table t(a)")
    db.executemany("insert into t values (?)", [(i,) for i in range(100)])
    db.commit()
    files = {}
    for name in ("x.db", "x.db-wal", "x.db-shm"):
        with open(os.path.join(folder, name), "rb") as f:
            files[name] = f.read()
    db.close()
    return files


@pytest.fixture
def mnt(tmp_path, mount_factory):  # noqa: F811
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {"a.bin": DATA, **{f"db/{k}": v for k, v in _wal_database(str(tmp_path / "wal")).items()}}
    commit(store, "ds", str(tmp_path / "src"), files)
    m = mount_factory(store, "--cache-dir", str(tmp_path / "cache"))
    m.files = files
    return m


def _read_elsewhere(path: str) -> bytes:
    """The file's bytes as another process reads them."""
    return subprocess.run(["cat", path], capture_output=True, check=True).stdout


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND,
                                   os.O_RDWR | os.O_CREAT, os.O_RDONLY | os.O_APPEND],
                         ids=["wronly", "rdwr", "rdonly-trunc", "append", "rdwr-creat", "rdonly-append"])
def test_root_opening_a_version_file_with_write_access_gets_erofs_at_open(mnt, flags):
    path = mnt.p("ds", "ds:v0", "a.bin")
    before = mnt.stats()
    with pytest.raises(OSError) as e:
        fd = os.open(path, flags)
        os.close(fd)  # (not reached)
    assert e.value.errno == errno.EROFS
    after = mnt.stats()
    assert after["native_opens"] == before["native_opens"] + 1  # refused by the native thread
    assert after["opens"] == before["opens"] == 0
    assert _read_elsewhere(path) == DATA


def test_numpy_memmap_r_plus_is_refused_and_readers_never_see_a_change(mnt):
    numpy = pytest.importorskip("numpy")
    path = mnt.p("ds", "ds:v0", "a.bin")
    assert _read_elsewhere(path) == DATA  # pages in the kernel's cache, as a loader's would be
    with pytest.raises(OSError) as e:
        numpy.memmap(path)  # mode 'r+' by default: open(O_RDWR) + a writable shared mapping
    assert e.value.errno == errno.EROFS
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(PermissionError):  # a read-only descriptor cannot be mapped shared and writable
            mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        with mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE) as private:
            private[0:4] = b"XXXX"  # copy-on-write: this process's own pages
            assert private[0:4] == b"XXXX"
    finally:
        os.close(fd)
    assert bytes(numpy.memmap(path, mode="r")) == DATA
    assert _read_elsewhere(path) == DATA


def test_read_only_opens_are_native_and_reads_stay_native(mnt, tmp_path):
    path = mnt.p("ds", "ds:v0", "a.bin")
    before = mnt.stats()
    script = ("import os, sys\n"
              "for _ in range(5):\n"
              "    fd = os.open(sys.argv[1], os.O_RDONLY)\n"
              "    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n"  # clean pages: a READ each time
              "    assert os.read(fd, 1 << 20) == open(sys.argv[2], 'rb').read()\n"
              "    os.close(fd)\n")
    want = tmp_path / "want.bin"
    want.write_bytes(DATA)
    subprocess.run([sys.executable, "-c", script, path, str(want)], check=True)
    after = mnt.stats()
    assert after["native_opens"] - before["native_opens"] == 5
    assert after["native_reads"] - before["native_reads"] >= 5
    assert after["opens"] == 0 and after["reads"] == before["reads"]


def test_sqlite_reads_a_wal_database_in_a_version(mnt):
    """SQLite opens the database and its -shm read-write first; refused (EROFS)
    at open, it falls back to read-only, and reads the rows in the -wal file."""
    folder = mnt.p("ds", "ds:v0", "db")
    for uri in (os.path.join(folder, "x.db"), f"file:{folder}/x.db?mode=ro"):
        db = sqlite3.connect(uri, uri=uri.startswith("file:"))
        try:
            assert db.execute("select count(*), sum(a) from t").fetchone() == (100, 4950)
            with pytest.raises(sqlite3.OperationalError):
                db.execute("insert into t values (1)")
        finally:
            db.close()
    for name in ("x.db", "x.db-wal", "x.db-shm"):
        assert _read_elsewhere(os.path.join(folder, name)) == mnt.files[f"db/{name}"]


def test_opens_of_draft_files_reach_python(mnt):
    path = mnt.p("ds", "draft", "notes.txt")
    before = mnt.stats()
    with open(path, "w") as f:
        f.write("one\n")
    with open(path, "r+") as f:
        f.write("two\n")
    with open(path) as f:
        assert f.read() == "two\n"
    after = mnt.stats()
    assert after["opens"] - before["opens"] >= 2  # the create is not an OPEN
    assert after["native_opens"] == before["native_opens"]


def test_a_set_user_id_draft_file_written_by_another_user_loses_the_bit(tmp_path, mount_factory):  # noqa: F811
    """Draft OPENs reach Python, which gives write-only opens FOPEN_DIRECT_IO
    (draftnodes.DraftHandle) but not for set-id files: POSIX clears those bits
    on a write by a process without CAP_FSETID (pjdfstest chmod/12.t)."""
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    m = mount_factory(store, "--allow-other")  # requests of other users reach the mount
    os.mkdir(m.p("pjd"))
    for bits in (0o4777, 0o2777, 0o6777):
        path = m.p("pjd", "draft", f"f{bits:o}")
        with open(path, "wb"):
            pass
        os.chmod(path, bits)
        assert os.stat(path).st_mode & 0o7777 == bits
        fd = os.open(path, os.O_WRONLY)
        try:  # written by a process without CAP_FSETID
            subprocess.run(["cat"], input=b"x", stdout=fd, check=True, user=65534, group=65534)
        finally:
            os.close(fd)
        assert os.stat(path).st_mode & 0o7777 == 0o777
        with open(path, "rb") as f:
            assert f.read() == b"x"


def test_a_reference_that_records_only_its_uri_fails_at_open(tmp_path, mount_factory):  # noqa: F811
    """Its size is unknown (shown as 0, so a read would end at once with no
    request): its attributes are not pinned, so its OPEN reaches Python, which
    refuses it with EIO (docs/mount-semantics.md, "Reading")."""
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    (tmp_path / "src").write_bytes(b"bytes the version never saw")
    art = Artifact("refs", "dataset", store=store)
    art.add_reference(f"file://{tmp_path}/src", name="lazy", checksum=False)
    art.add_reference("gs://bucket/object.bin")
    art.save("proj")
    m = mount_factory(store)
    for name in ("lazy", "object.bin"):
        path = m.p("refs", "refs:v0", name)
        assert os.stat(path).st_size == 0
        with pytest.raises(OSError) as e:
            open(path, "rb").close()
        assert e.value.errno == errno.EIO
