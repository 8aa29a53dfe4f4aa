"""READs and GETATTRs of small version files answered by the patched pyfuse3's
native threads (mount/nativereads.py, third_party/pyfuse3: fastpath.c), on real
mounts: the bytes are right, they never reach Python, a blob that does not
match its digest still gives EIO (through Python), and over S3 a blob in the
verified cache is served natively while a corrupted copy is left to Python."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pyfuse3
import pytest
from conftest import randbytes, skip_or_fail
from mountutil import mounted, wait_for
from s3server import moto_server, s3_server, s3_url  # noqa: F401 (fixtures)
from test_mount_read import commit

from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry, blob_key


@pytest.fixture(autouse=True)
def _native() -> None:
    if not hasattr(pyfuse3, "fastpath_register"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")


def _drop_pages(path: str) -> None:
    """Have the kernel drop its cached pages of `path` (the next read sends a READ)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _corrupt(path: str) -> None:
    """Flip one byte in the middle of a file (same length: only the digest can tell)."""
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)


def test_small_files_are_read_without_python_and_big_ones_with_it(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {f"d/{i:02}.bin": randbytes(1000 + 997 * i) for i in range(20)}
    files["big.bin"] = randbytes(CHUNK_SIZE + 5000)  # two chunks: the chunk reader's
    files["empty"] = b""
    commit(store, "n", str(tmp_path / "src"), files)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        root = m.p("n", "n:v0")
        for name, data in sorted(files.items()):
            assert _read(os.path.join(root, name)) == data
        s = m.stats()  # each small file stored whole at its OPEN (fastopen.c), or READ natively
        assert s["native_reads"] + s["native_open_stores"] >= 20
        assert s["fetches"] == 2  # the big file's two chunks, nothing else
        # ranges: pread at offsets inside and past the end, after the pages are dropped
        path = os.path.join(root, "d/07.bin")
        _drop_pages(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = bytearray(4096)
            for off in (0, 4096):
                n = os.preadv(fd, [buf], off)
                assert bytes(buf[:n]) == files["d/07.bin"][off:off + 4096]
            assert os.preadv(fd, [buf], 1 << 20) == 0
        finally:
            os.close(fd)
        # a stat after a READ (the kernel marks atime stale) is answered natively too
        before = m.stats()
        st = os.stat(path)
        assert (st.st_size, st.st_ino) == (len(files["d/07.bin"]), os.stat(path).st_ino)
        after = m.stats()
        assert after["native_answers"] > before["native_answers"]
        assert after["fetches"] == before["fetches"]


def test_python_reads_option_keeps_every_read_in_python(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    commit(store, "n", str(tmp_path / "src"), {"a.bin": b"a" * 5000})
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--python-reads") as m:
        assert _read(m.p("n", "n:v0", "a.bin")) == b"a" * 5000
        s = m.stats()
        assert s["native_reads"] == 0 and s["reads"] >= 1


def test_a_corrupted_or_replaced_blob_gives_eio_natively_served_or_not(tmp_path):
    """Same-length corruption (only the digest can tell), a truncated blob, and a
    FIFO in the blob's place (must not block a native thread): the first two are
    EIO, the FIFO is left to Python's reader, which gets its bytes once written."""
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {"flip.bin": randbytes(30_000), "short.bin": randbytes(20_000), "fifo.bin": randbytes(10_000),
             "ok.bin": randbytes(10_000)}
    art = commit(store, "c", str(tmp_path / "src"), files)
    local = Registry.open(store).store.local_path
    blob = {name: local(blob_key(art.manifest.entries[name].chunks[0])) for name in files}
    _corrupt(blob["flip.bin"])
    os.chmod(blob["short.bin"], 0o644)
    os.truncate(blob["short.bin"], 19_999)
    os.unlink(blob["fifo.bin"])
    os.mkfifo(blob["fifo.bin"])
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        root = m.p("c", "c:v0")
        for name in ("flip.bin", "short.bin"):
            with pytest.raises(OSError) as e:
                _read(os.path.join(root, name))
            assert e.value.errno == errno.EIO
            assert f"c:v0/{name}" in m.log
        reads = m.stats()["reads"]
        reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.buffer.write("
                                   "open(sys.argv[1], 'rb').read())", os.path.join(root, "fifo.bin")],
                                  stdout=subprocess.PIPE)
        assert _read(os.path.join(root, "ok.bin")) == files["ok.bin"]  # the others are still served
        # the FIFO's READ reached Python (it was refused natively; opening the FIFO to write
        # before that would pair with the native thread's probe and lose the bytes)
        wait_for(lambda: m.stats()["reads"] > reads, 60, "the FIFO's READ to reach Python")
        with open(blob["fifo.bin"], "wb") as f:  # the Python reader waits on the FIFO for these
            f.write(files["fifo.bin"])
        out, _ = reader.communicate(timeout=60)
        assert out == files["fifo.bin"]
        assert m.stats()["native_reads"] + m.stats()["native_open_stores"] >= 1  # ok.bin (a READ, or stored at OPEN)


def test_over_s3_a_cached_blob_is_read_natively_and_a_corrupted_copy_fetched_again(s3_url, tmp_path):
    Registry.open(s3_url, create=True)
    data = randbytes(40_000)
    art = commit(s3_url, "s", str(tmp_path / "src"), {"x.bin": data})
    key = art.manifest.entries["x.bin"].chunks[0]
    cache = tmp_path / "cache"
    with mounted(s3_url, tmp_path / "mnt", "--cache-dir", str(cache)) as m:
        path = m.p("s", "s:v0", "x.bin")
        assert _read(path) == data  # not cached yet: Python fetches it into the cache
        s = m.stats()
        assert s["fetches"] == 1
        copy = cache / "blobs" / key[:2] / key
        assert copy.is_file()
        _drop_pages(path)
        assert _read(path) == data  # from the cache file, natively
        s2 = m.stats()
        assert s2["native_reads"] > s["native_reads"] and s2["fetches"] == 1
        _corrupt(str(copy))
        _drop_pages(path)
        assert _read(path) == data  # the bad copy is refused natively; Python has the verified bytes
        s3 = m.stats()
        assert s3["native_reads"] == s2["native_reads"] and s3["reads"] > s2["reads"]


def test_a_folder_read_natively_is_read_ahead_after_four_files(tmp_path):
    """Four files of a folder read natively (in any order; by default each is
    stored whole into the page cache at its OPEN, instead of READ): the native
    read-ahead stores the folder's other registered files into the kernel page
    cache, so they are read without a READ (and only that folder's), and their
    OPENs store nothing again."""
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {f"a/{i:02}.bin": randbytes(2000 + 13 * i) for i in range(30)}
    files.update({f"b/{i:02}.bin": randbytes(3000 + 7 * i) for i in range(10)})
    commit(store, "r", str(tmp_path / "src"), files)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        root = m.p("r", "r:v0")
        os.listdir(os.path.join(root, "b"))  # known to the kernel, registered, never read
        names = sorted(os.listdir(os.path.join(root, "a")))
        for name in (names[20], names[3], names[11]):
            assert _read(os.path.join(root, "a", name)) == files[f"a/{name}"]
        assert m.stats()["native_readahead"] == 0
        assert _read(os.path.join(root, "a", names[7])) == files[f"a/{names[7]}"]
        wait_for(lambda: m.stats()["native_readahead"] >= 26, 60, "folder a/ to be read ahead")
        for name in names:
            assert _read(os.path.join(root, "a", name)) == files[f"a/{name}"]
        s = m.stats()
        assert s["native_readahead"] == 26  # the 26 not read yet, none of b/
        assert s["native_open_stores"] == 4 and s["native_reads"] == 0 and s["reads"] == 0  # the others: page cache
