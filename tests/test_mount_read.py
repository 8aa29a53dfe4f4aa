"""Reading versions through a real mount: layout, exact bytes and metadata,
standard tools, EROFS, xattrs, parallel readers, corruption, lazy fetching."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from conftest import randbytes, seed_random, skip_or_fail
from core_util import write_files
from mountutil import mount_factory, mounted  # noqa: F401 (fixture)

from artifactfs.api.artifact import Artifact
from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry, blob_key

PROJECT = "proj"
BIG = 3 * CHUNK_SIZE + 12345  # four chunks, the last one short


def commit(store: str, name: str, root: str, files: dict[str, bytes], type_: str = "dataset",
           aliases: tuple[str, ...] = (), executable: tuple[str, ...] = (), **kw) -> Artifact:
    """Log exactly `files` as the next version of `name`."""
    if os.path.exists(root):
        subprocess.run(["rm", "-rf", root], check=True)
    write_files(root, files)
    for p in executable:
        os.chmod(os.path.join(root, p), 0o755)
    art = Artifact(name, type_, store=store, **kw)
    art.aliases = list(aliases)
    art.add_dir(root)
    return art.save(PROJECT)


def version_files(tmp: str, n: int) -> dict[str, bytes]:
    rnd = randbytes
    files = {"README.md": f"version {n}\n".encode(), "data/train/x.bin": rnd(70_000),
             "data/train/y.bin": rnd(1000), "data/empty": b"", "bin/run.sh": b"#!/bin/sh\necho hi\n",
             "deep/a/b/c/d/e.txt": b"deep\n", "name with spaces.txt": b"spaces\n"}
    if n == 0:
        files["big.bin"] = rnd(BIG)
    if n == 1:
        files["new-in-v1.txt"] = b"new\n"
    return files


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[str, dict[int, dict[str, bytes]]]:
    """A store with three versions of 'ds' (v0 holds a 4-chunk file) and one of 'model'."""
    seed_random("test_mount_read.dataset")  # module scope: set up before the test's own seeding
    tmp = str(tmp_path_factory.mktemp("dataset"))
    store = os.path.join(tmp, "store")
    Registry.open(store, create=True)
    versions = {}
    for n in range(3):
        files = version_files(tmp, n)
        if n == 2:
            files["big.bin"] = versions[0]["big.bin"]  # unchanged between versions
        commit(store, "ds", os.path.join(tmp, "src"), files, aliases=("best",) if n == 1 else (),
               executable=("bin/run.sh",), description=f"v{n}", metadata={"n": n})
        versions[n] = files
    commit(store, "model", os.path.join(tmp, "src"), {"w.pt": b"weights"}, type_="model")
    return store, versions


@pytest.fixture(scope="module")
def mnt(dataset, tmp_path_factory):
    store, _ = dataset
    tmp = tmp_path_factory.mktemp("mount")
    with mounted(store, tmp / "mnt", "--cache-dir", str(tmp / "cache")) as m:
        yield m


def test_layout(mnt, dataset):
    assert sorted(os.listdir(mnt.path)) == ["ds", "model"]
    listed = set(os.listdir(mnt.p("ds"))) - {"draft"}  # draft/: the writable folder
    assert listed == {"ds:best", "ds:latest", "ds:v0", "ds:v1", "ds:v2"}
    assert os.readlink(mnt.p("ds", "ds:latest")) == "ds:v2"
    assert os.readlink(mnt.p("ds", "ds:best")) == "ds:v1"
    assert set(os.listdir(mnt.p("model"))) - {"draft"} == {"model:latest", "model:v0"}
    assert sorted(os.listdir(mnt.p("ds", "ds:v1"))) == sorted(
        ["README.md", "data", "bin", "deep", "name with spaces.txt", "new-in-v1.txt"])
    with open(mnt.p("ds", "ds:best", "new-in-v1.txt"), "rb") as f:
        assert f.read() == b"new\n"
    for bad in ("ds:v9", "ds:nope", "other:v0", "ds", "v0"):
        assert not os.path.exists(mnt.p("ds", bad))
    assert not os.path.exists(mnt.p("nope"))


def test_every_file_byte_for_byte(mnt, dataset):
    _, versions = dataset
    for n, files in versions.items():
        root = mnt.p("ds", f"ds:v{n}")
        seen = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                full = os.path.join(dirpath, name)
                with open(full, "rb") as f:
                    seen[os.path.relpath(full, root)] = f.read()
        assert seen.keys() == files.keys()
        for path, content in files.items():
            assert seen[path] == content, f"v{n}/{path} differs"


def test_stat_modes_sizes_times_inodes(mnt, dataset):
    store, versions = dataset
    info = Registry.open(store).get(PROJECT, "ds", "v0")
    root = mnt.p("ds", "ds:v0")
    st = os.stat(os.path.join(root, "big.bin"))
    assert st.st_size == BIG and stat.S_IMODE(st.st_mode) == 0o444 and stat.S_ISREG(st.st_mode)
    from artifactfs.timestamps import iso_ns
    kept = Registry.open(store).lookup(info.root, "big.bin").mtime_ns
    assert kept is not None and st.st_mtime_ns == kept  # the file's own time, kept by put
    assert os.stat(os.path.join(root, "data")).st_mtime_ns == iso_ns(info.created_at)  # folders: the version's
    assert st.st_blocks * 512 >= BIG
    assert stat.S_IMODE(os.stat(os.path.join(root, "bin/run.sh")).st_mode) == 0o555
    d = os.stat(os.path.join(root, "data"))
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o555
    assert os.stat(os.path.join(root, "data/empty")).st_size == 0
    # inode numbers: stable and distinct
    inos = {os.path.join(dp, n): os.lstat(os.path.join(dp, n)).st_ino
            for dp, ds, fs in os.walk(root) for n in ds + fs}
    assert len(set(inos.values())) == len(inos)
    assert all(os.lstat(p).st_ino == i for p, i in inos.items())
    assert os.lstat(mnt.p("ds", "ds:latest")).st_mode & stat.S_IFLNK == stat.S_IFLNK


def test_standard_tools(mnt, dataset, tmp_path):
    _, versions = dataset
    src = mnt.p("ds", "ds:v0")
    out = subprocess.run(["find", src, "-type", "f"], capture_output=True, text=True, check=True).stdout
    assert len(out.split("\n")) - 1 == len(versions[0])
    du = int(subprocess.run(["du", "-sb", src], capture_output=True, text=True, check=True).stdout.split()[0])
    assert du >= sum(len(c) for c in versions[0].values())
    subprocess.run(["ls", "-lR", src], capture_output=True, check=True)
    subprocess.run(["cp", "-r", src, str(tmp_path / "cp")], check=True)
    with tarfile.open(tmp_path / "v0.tar", "w") as t:
        t.add(src, arcname="v0")
    with tarfile.open(tmp_path / "v0.tar") as t:
        names = {m.name for m in t.getmembers() if m.isfile()}
    assert names == {f"v0/{p}" for p in versions[0]}
    sums = subprocess.run(["sha256sum", os.path.join(src, "big.bin"), os.path.join(src, "README.md")],
                          capture_output=True, text=True, check=True).stdout.split()
    assert sums[0] == hashlib.sha256(versions[0]["big.bin"]).hexdigest()
    for path, content in versions[0].items():
        with open(tmp_path / "cp" / path, "rb") as f:
            assert f.read() == content


def test_rsync_archive_copy(mnt, dataset, tmp_path):
    if shutil.which("rsync") is None:
        skip_or_fail("rsync is not installed (it is in the Makefile's APT_PACKAGES)")
    _, versions = dataset
    src = mnt.p("ds", "ds:v0")
    subprocess.run(["rsync", "-a", src + "/", str(tmp_path / "copy")], check=True)
    for path, content in versions[0].items():
        with open(tmp_path / "copy" / path, "rb") as f:
            assert f.read() == content
    assert os.stat(tmp_path / "copy" / "README.md").st_mtime_ns // 10**9 == os.stat(
        os.path.join(src, "README.md")).st_mtime_ns // 10**9
    # a second run finds nothing to transfer: sizes and mtimes are stable
    out = subprocess.run(["rsync", "-a", "--itemize-changes", src + "/", str(tmp_path / "copy")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


@pytest.mark.parametrize("op", ["write", "append", "overwrite", "create", "unlink", "mkdir", "rmdir", "rename",
                                "truncate", "chmod", "symlink", "setxattr"])
def test_writes_in_a_version_are_erofs(mnt, op):
    """Opening for writing is refused at open(2) when the kernel sends OPEN
    (--send-opens), else at the first write(2) (noopen.py); O_TRUNC at open(2)."""
    root = mnt.p("ds", "ds:v0")
    f = os.path.join(root, "README.md")

    def write(flags: int) -> None:
        fd = os.open(f, flags)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    actions = {
        "write": lambda: write(os.O_RDWR),
        "append": lambda: write(os.O_WRONLY | os.O_APPEND),
        "overwrite": lambda: open(f, "wb"),
        "create": lambda: open(os.path.join(root, "new.txt"), "wb"),
        "unlink": lambda: os.unlink(f),
        "mkdir": lambda: os.mkdir(os.path.join(root, "data", "newdir")),
        "rmdir": lambda: os.rmdir(os.path.join(root, "deep", "a")),
        "rename": lambda: os.rename(f, os.path.join(root, "moved.md")),
        "truncate": lambda: os.truncate(f, 0),
        "chmod": lambda: os.chmod(f, 0o644),
        "symlink": lambda: os.symlink("README.md", os.path.join(root, "link")),
        "setxattr": lambda: os.setxattr(root, "user.artifact.description", b"x"),
    }
    with pytest.raises(OSError) as e:
        actions[op]()
    assert e.value.errno == errno.EROFS, e.value
    with open(f, "rb") as fh:
        assert fh.read() == b"version 0\n"


def test_xattrs(mnt, dataset):
    store, versions = dataset
    out = subprocess.run(["getfattr", "-d", "--absolute-names", mnt.p("ds", "ds:v1")],
                         capture_output=True, text=True, check=True).stdout
    attrs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    info = Registry.open(store).get(PROJECT, "ds", "v1")
    assert attrs["user.artifact.name"] == '"ds"'
    assert attrs["user.artifact.version"] == '"v1"'
    assert attrs["user.artifact.type"] == '"dataset"'
    assert attrs["user.artifact.digest"] == f'"{info.digest}"'
    assert attrs["user.artifact.aliases"] == '"best"'
    assert attrs["user.artifact.file_count"] == f'"{len(versions[1])}"'
    assert attrs["user.artifact.size"] == f'"{sum(len(c) for c in versions[1].values())}"'
    for k in ("description", "metadata", "tags", "created_at", "state", "ttl"):
        assert f"user.artifact.{k}" in attrs
    assert json.loads(os.getxattr(mnt.p("ds", "ds:v1"), "user.artifact.metadata")) == {"n": 1}
    assert os.getxattr(mnt.p("ds", "ds:v1"), "user.artifact.description") == b"v1"
    assert os.getxattr(mnt.p("model"), "user.artifact.type") == b"model"
    f = mnt.p("ds", "ds:v0", "README.md")
    entry = Artifact._from_version(Registry.open(store), info).get_entry("README.md")
    assert os.getxattr(mnt.p("ds", "ds:v1", "README.md"), "user.artifact.digest") == entry.digest.encode()
    assert os.getxattr(f, "user.artifact.size") == b"10"
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.artifact.nope")
    assert e.value.errno == errno.ENODATA


def _sha_all(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            h = hashlib.sha256()
            with open(full, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[os.path.relpath(full, root)] = h.hexdigest()
    return out


def test_eight_parallel_reader_processes(mnt, dataset, tmp_path):
    store, versions = dataset
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        for rel in (("ds", "ds:v1", "data", "train", "x.bin"), ("ds", "ds:v0"), ("ds", "ds:best")):
            assert os.lstat(m.p(*rel)).st_ino == os.lstat(mnt.p(*rel)).st_ino  # same in every mount
        roots = [m.p("ds", f"ds:v{i % 3}") for i in range(8)]
        with ProcessPoolExecutor(8) as pool:
            results = list(pool.map(_sha_all, roots))
        for i, got in enumerate(results):
            want = {p: hashlib.sha256(c).hexdigest() for p, c in versions[i % 3].items()}
            assert got == want
        s = m.stats()
        # v0 and v2 share big.bin: fetched once, however many readers
        assert s["bytes_fetched"] < 2 * BIG


def test_partial_read_fetches_only_what_is_needed(dataset, tmp_path):
    store, versions = dataset
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        before = m.stats()["bytes_fetched"]
        with open(m.p("ds", "ds:v0", "big.bin"), "rb") as f:
            assert f.read(4096) == versions[0]["big.bin"][:4096]
        fetched = m.stats()["bytes_fetched"] - before
        assert 0 < fetched <= CHUNK_SIZE
        with open(m.p("ds", "ds:v0", "big.bin"), "rb") as f:  # a seek into the last chunk
            f.seek(BIG - 100)
            assert f.read() == versions[0]["big.bin"][-100:]
        assert m.stats()["bytes_fetched"] - before <= CHUNK_SIZE + 12345
        os.listdir(m.p("ds", "ds:v1", "data", "train"))  # listing fetches no contents
        assert m.stats()["bytes_fetched"] - before <= CHUNK_SIZE + 12345


def test_corrupted_blob_gives_eio_not_wrong_bytes(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    good, bad = randbytes(100_000), randbytes(2 * CHUNK_SIZE)
    art = commit(store, "c", str(tmp_path / "src"), {"good.bin": good, "bad.bin": bad, "small.txt": b"abc"})
    reg = Registry.open(store)
    entries = art.manifest.entries
    victims = [entries["bad.bin"].chunks[1], entries["small.txt"].chunks[0]]
    for key in victims:
        path = reg.store.local_path(blob_key(key))
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(data)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        root = m.p("c", "c:v0")
        with open(os.path.join(root, "good.bin"), "rb") as f:
            assert f.read() == good
        with open(os.path.join(root, "bad.bin"), "rb") as f:
            assert f.read(CHUNK_SIZE) == bad[:CHUNK_SIZE]  # the intact first chunk reads fine
            with pytest.raises(OSError) as e:
                f.read()
            assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            open(os.path.join(root, "small.txt"), "rb").read()
        assert e.value.errno == errno.EIO
        log = m.log
        assert "c:v0/bad.bin" in log and "c:v0/small.txt" in log


def test_listing_one_folder_loads_one_tree(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {f"d{i:02}/f{j}.txt": f"{i}/{j}".encode() for i in range(40) for j in range(5)}
    commit(store, "wide", str(tmp_path / "src"), files)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        assert m.stats()["trees_loaded"] == 0
        assert sorted(os.listdir(m.p("wide", "wide:v0", "d07"))) == [f"f{j}.txt" for j in range(5)]
        s = m.stats()
        assert s["trees_loaded"] == 2  # the version's root and d07, not the other 39 folders
        assert s["bytes_fetched"] == 0
        assert len(os.listdir(m.p("wide", "wide:v0"))) == 40
        assert m.stats()["trees_loaded"] == 2


def test_a_stalled_fetch_does_not_stall_other_readers(tmp_path):
    """One blob is a FIFO: fetching it blocks a worker thread until the test writes
    it.  Meanwhile other files and listings must be served."""
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    slow = randbytes(50_000)
    art = commit(store, "s", str(tmp_path / "src"), {"slow.bin": slow, "fast.txt": b"fast\n", "d/x": b"x"})
    blob = Registry.open(store).store.local_path(blob_key(art.manifest.entries["slow.bin"].chunks[0]))
    os.unlink(blob)
    os.mkfifo(blob)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(open(m.p("s", "s:v0", "slow.bin"), "rb").read()))
        reader.start()
        time.sleep(0.5)
        assert reader.is_alive()  # blocked on the FIFO
        start = time.monotonic()
        for _ in range(20):
            with open(m.p("s", "s:v0", "fast.txt"), "rb") as f:
                assert f.read() == b"fast\n"
            assert os.listdir(m.p("s", "s:v0", "d")) == ["x"]
        assert m.stats()["reads"] >= 1
        assert time.monotonic() - start < 5
        with open(blob, "wb") as f:  # release the stalled fetch with the right bytes
            f.write(slow)
        reader.join(10)
        assert got == [slow]


def test_sequential_readers_get_read_ahead_random_ones_do_not(dataset, tmp_path):
    store, versions = dataset
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        path = m.p("ds", "ds:v0", "big.bin")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT) if hasattr(os, "O_DIRECT") else os.open(path, os.O_RDONLY)
        try:  # a few scattered reads: no read-ahead
            for off in (3 * CHUNK_SIZE, 0, 2 * CHUNK_SIZE):
                os.pread(fd, 4096, off)
        finally:
            os.close(fd)
        assert m.stats()["readahead"] == 0
        with open(path, "rb") as f:
            assert f.read() == versions[0]["big.bin"]
        assert m.stats()["readahead"] >= 1


def test_opening_a_folders_files_in_order_fetches_the_next_small_files_ahead(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {f"shards/{i:03}.bin": randbytes(10_000 + i) for i in range(30)}
    commit(store, "sh", str(tmp_path / "src"), files)
    # --python-reads: the read-ahead policy of the chunk reader (reads of a local store's
    # small files are otherwise answered by pyfuse3's native threads: test_mount_native.py)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--python-reads") as m:
        root = m.p("sh", "sh:v0", "shards")
        names = sorted(os.listdir(root))
        with open(os.path.join(root, names[20]), "rb") as f:  # one file alone: nothing ahead
            assert f.read() == files[f"shards/{names[20]}"]
        assert m.stats()["readahead"] == 0
        for name in names[:3]:  # in order: the next files are fetched ahead
            with open(os.path.join(root, name), "rb") as f:
                assert f.read() == files[f"shards/{name}"]
        s = m.stats()
        assert s["readahead"] >= 8
        for name in names[3:]:
            with open(os.path.join(root, name), "rb") as f:
                assert f.read() == files[f"shards/{name}"]
        s = m.stats()
        assert s["fetches"] == 30  # every file fetched exactly once
        assert s["memory_hits"] + s["pages_fed"] >= 20  # read from memory, or put in the page cache ahead


def _reads(m) -> int:
    """READ requests answered so far, by Python or by pyfuse3's native threads, and
    files those stored whole into the page cache at their OPEN instead (fastopen.c)."""
    s = m.stats()
    return s["reads"] + s["native_reads"] + s["native_open_stores"]


def test_warm_reads_come_from_the_page_cache(dataset, tmp_path):
    store, versions = dataset
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        path = m.p("ds", "ds:v1", "data", "train", "x.bin")
        with open(path, "rb") as f:
            assert f.read() == versions[1]["data/train/x.bin"]
        reads = _reads(m)
        assert reads >= 1
        for _ in range(3):  # new opens, even from other processes, are served by the kernel
            out = subprocess.run(["sha256sum", path], capture_output=True, text=True, check=True).stdout
            assert out.split()[0] == hashlib.sha256(versions[1]["data/train/x.bin"]).hexdigest()
        assert _reads(m) == reads
