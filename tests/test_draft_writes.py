"""How bytes written into draft/ travel (issue 10), through a real mount: a file
created write-only is written with FOPEN_DIRECT_IO (no page of it cached by the
writer's copy, readers through other descriptors and mappings still see every
write); a big file copied in is staged one file per chunk, each linked into
the local store as its blob."""
from __future__ import annotations

import ctypes
import glob
import mmap
import os
import subprocess
import sys

import pytest
import xxhash
from conftest import randbytes
from draft_helpers import version_files
from mountutil import cli, mount_factory, wait_for  # noqa: F401  (fixture)

from artifactfs.registry.keys import blob_key
from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry

MiB = 1 << 20
PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    Registry.open(url, create=True)
    return url


def cached_pages(path: str, size: int) -> int:
    """Pages of the file's first `size` bytes in the page cache (mincore(2) of a
    mapping nobody touches, so looking does not read anything in)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
            assert _libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
            return sum(v & 1 for v in vec)
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def test_a_file_created_write_only_is_written_around_the_page_cache(store, mount_factory):
    m = mount_factory(store)
    os.mkdir(m.p("w"))
    d = m.p("w", "draft")
    first, second = randbytes(4 * MiB), randbytes(8192)
    w = os.open(f"{d}/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # a CREATE: the reply sets direct I/O
    try:
        os.write(w, first)
        assert cached_pages(f"{d}/f", len(first)) == 0, "a write-only descriptor's writes filled the page cache"
        r = os.open(f"{d}/f", os.O_RDONLY)
        try:
            mapped = mmap.mmap(r, len(first), prot=mmap.PROT_READ)
            assert os.pread(r, 16, 0) == first[:16] and mapped[MiB:MiB + 16] == first[MiB:MiB + 16]
            assert cached_pages(f"{d}/f", len(first)) > 0  # the reader cached pages ...
            os.pwrite(w, second, MiB - 100)                 # ... which a direct write over them drops
            expect = first[:MiB - 100] + second + first[MiB - 100 + len(second):]
            assert os.pread(r, len(first), 0) == expect
            assert mapped[:] == expect
            mapped.close()
        finally:
            os.close(r)
        os.write(w, b"tail")  # the descriptor's offset was not moved by pwrite
    finally:
        os.close(w)
    assert os.path.getsize(f"{d}/f") == len(first) + 4
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert version_files(Registry.open(store), "w", 0) == {"f": (expect + b"tail", False)}


def test_cp_of_a_big_file_stages_chunks_that_become_their_blobs(store, mount_factory, tmp_path):
    """A big file copied in by cp is staged one file per chunk, and each complete
    chunk is linked into the local store as its blob while cp still runs (no
    copy of the bytes); sync publishes it and the draft gives its pieces back."""
    m = mount_factory(store)
    os.mkdir(m.p("w"))
    src = tmp_path / "big.bin"
    payload = randbytes(3 * CHUNK_SIZE + 7)
    src.write_bytes(payload)
    subprocess.run(["cp", str(src), m.p("w", "draft", "big.bin")], check=True)
    data = glob.glob(os.path.join(m.env["XDG_STATE_HOME"], "artifactfs", "drafts", "*", "proj", "*", "w", "data"))
    assert len(data) == 1
    names = sorted(os.listdir(data[0]))
    i = names[0].split(".")[0]
    assert names == [f"{i}.c0", f"{i}.c1", f"{i}.c2", f"{i}.t"]
    for k in range(3):
        key = xxhash.xxh3_128_hexdigest(payload[k * CHUNK_SIZE:(k + 1) * CHUNK_SIZE])
        blob = os.path.join(store, blob_key(key))
        wait_for(lambda: os.path.exists(blob), 60, f"chunk {k} in the store")
        assert os.stat(blob).st_ino == os.stat(os.path.join(data[0], f"{i}.c{k}")).st_ino, "linked, not copied"
    assert open(m.p("w", "draft", "big.bin"), "rb").read() == payload
    done = cli("sync", m.p("w", "draft"), env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert version_files(Registry.open(store), "w", 0) == {"big.bin": (payload, False)}
    assert os.listdir(data[0]) == []


def test_sync_and_umount_publish_what_a_shared_mapping_wrote(store, mount_factory):
    """A program keeps a shared writable mapping of a draft file (numpy.memmap
    'w+') and has not msync'ed: the kernel holds those pages dirty.  `sync` (and
    `umount`) published the bytes the file had before; now the CLI writes the
    mount back (syncfs) before the commit, so the version holds what the draft
    shows.  The file is being written (the mapping keeps it open), so sync
    waits for the program to unmap it (docs/drafts.md), then publishes.  (A
    file this mapping created is being written with or without the write-back;
    test_sync_writers.py's mapping of an existing file opened read-write is
    the one that needs syncfs to be seen as written.)"""
    m = mount_factory(store)
    os.mkdir(m.p("feat"))
    path = m.p("feat", "draft", "f.bin")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import mmap, os, sys\n"
         f"fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
         f"os.ftruncate(fd, {PAGE})\n"
         f"mm = mmap.mmap(fd, {PAGE})\n"
         "mm[:] = b'\\x04' * len(mm)\n"
         "print('written', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "written\n"
        sync = subprocess.Popen([sys.executable, "-m", "artifactfs", "sync", m.p("feat", "draft"), "--timeout", "60"],
                                env=m.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert sync.stderr.readline().startswith("feat: waiting up to 60 s for 1 file(s) open for writing")
        writer.communicate("", timeout=30)             # unmaps and exits
        out, err = sync.communicate(timeout=60)
        assert sync.returncode == 0 and out == "feat:v0\n", err
        assert version_files(Registry.open(store), "feat", 0)["f.bin"] == (b"\x04" * PAGE, False)
    finally:
        if writer.poll() is None:
            writer.communicate("", timeout=30)
