"""Big files written in order kept as one file per chunk (drafts/datafiles.py,
issue 10), in-process over a local store on the staging filesystem: sealed
chunks become blobs by link(2) ahead of the commit; reads, stat, utime and
fsync see one file; any other write, a truncate and a restart join the pieces
into one data file again; a restart in the middle of any step loses nothing."""
from __future__ import annotations

import gc
import os
import random

import pytest
import xxhash
from conftest import randbytes
from draft_helpers import Paths, open_test_draft, version_files

from artifactfs.chunks import upload
from artifactfs.drafts import datafiles, filedata
from artifactfs.drafts.advance import reclaim
from artifactfs.drafts.commit import commit_draft
from artifactfs.drafts.lifecycle import export_files, recover
from artifactfs.drafts.tostore import seals_chunks, store_ahead
from artifactfs.registry.keys import blob_key
from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry

SIZE = 3 * CHUNK_SIZE + 12345


@pytest.fixture
def reg(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("ARTIFACTFS_HASH_CACHE", "off")
    return Registry.open(str(tmp_path / "store"), create=True)


def sealing(reg: Registry) -> Paths:
    p = Paths(open_test_draft(reg, "w"))
    assert seals_chunks(reg.store, p.draft.data), "the test's store and staging share a filesystem"
    p.draft.seal_chunks = True
    return p


def write_in_order(p: Paths, path: str, data: bytes, seed: int = 0) -> None:
    """`data` written from offset 0 in writes of seeded random sizes, some across chunk ends."""
    rnd, off = random.Random(seed), 0
    while off < len(data):
        n = rnd.choice([1, 4096, 131072, 1 << 20, 3 << 20, CHUNK_SIZE + 5])
        p.write(path, data[off:off + n], off)
        off += n


def names(p: Paths) -> list[str]:
    return sorted(os.listdir(p.draft.data))


def blob(reg: Registry, key: str) -> str:
    return os.path.join(reg.store.root, blob_key(key))


def commit_without_reading(reg: Registry, p: Paths, monkeypatch) -> None:
    real = upload.upload_many

    def no_reading(registry, paths, progress=None):
        assert not paths, "the commit read a staged file"
        return real(registry, paths, progress)
    monkeypatch.setattr(upload, "upload_many", no_reading)
    commit_draft(reg, p.draft)
    monkeypatch.undo()


def test_a_big_file_written_in_order_is_sealed_chunk_by_chunk_and_linked_into_the_store(reg, monkeypatch):
    p = sealing(reg)
    data = randbytes(SIZE)
    p.held = p.create("big")
    write_in_order(p, "big", data)
    ino = p.node("big")
    i = ino.id
    assert ino.sealed == 3 and names(p) == [f"{i}.c0", f"{i}.c1", f"{i}.c2", f"{i}.t"]
    assert os.path.getsize(os.path.join(p.draft.data, f"{i}.t")) == 12345
    assert p.stat("big").size == SIZE
    for off, n in [(0, 10), (CHUNK_SIZE - 5, 10), (CHUNK_SIZE - 5, 2 * CHUNK_SIZE + 20), (SIZE - 3, 100),
                   (SIZE, 10), (0, SIZE + 1)]:
        assert filedata.read(p.draft, ino, off, n) == data[off:off + n], (off, n)
    running = ino.running
    assert [store_ahead(reg.store, p.draft, ino, running, k) for k in range(4)] == [True, True, True, False]
    for k in range(3):
        chunk = os.path.join(p.draft.data, f"{i}.c{k}")
        assert os.stat(chunk).st_ino == os.stat(blob(reg, running.keys[k])).st_ino, "linked, not copied"
    filedata.fsync(p.draft, ino, False)
    commit_without_reading(reg, p, monkeypatch)
    assert version_files(reg, "w", 0)["big"] == (data, False)
    entry = reg.lookup(reg.version("proj", "w", 0).root, "big")
    assert list(entry.chunks[:3]) == running.keys
    assert reclaim(p.draft) == 1 and names(p) == [], "given back whole"
    assert p.read("big") == data


def test_a_sealed_file_the_kernel_forgot_stays_sealed(reg, monkeypatch):
    """Nothing but the draft holds the inode of a sealed file (the kernel forgot it,
    more files were written in order than Draft.digesting keeps): its next lookup
    still knows its pieces, and the commit publishes it whole."""
    p = sealing(reg)
    data = randbytes(SIZE)
    p.create("big")
    write_in_order(p, "big", data, seed=5)
    p.draft.digesting.clear()
    gc.collect()
    ino = p.node("big")
    assert ino.sealed == 3 and p.stat("big").size == SIZE and p.read("big") == data
    commit_without_reading(reg, p, monkeypatch)
    assert version_files(reg, "w", 0)["big"] == (data, False)
    assert reclaim(p.draft) == 1 and names(p) == [] and p.draft.sealed_files == {}


def test_a_write_out_of_order_joins_the_pieces_and_no_blob_changes(reg):
    p = sealing(reg)
    data = randbytes(SIZE)
    p.held = p.create("big")
    write_in_order(p, "big", data, seed=1)
    ino = p.node("big")
    for k in range(3):
        assert store_ahead(reg.store, p.draft, ino, ino.running, k)
    keys = list(ino.running.keys)
    p.write("big", b"NEW", CHUNK_SIZE + 7)
    assert ino.sealed == 0 and ino.running is None and names(p) == [str(ino.id)]
    expect = data[:CHUNK_SIZE + 7] + b"NEW" + data[CHUNK_SIZE + 10:]
    assert p.read("big") == expect
    for key in keys:
        with open(blob(reg, key), "rb") as f:
            assert xxhash.xxh3_128_hexdigest(f.read()) == key, "a blob never changes"
    commit_draft(reg, p.draft)
    assert version_files(reg, "w", 0)["big"] == (expect, False)


@pytest.mark.parametrize("size", [0, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 12345, 2 * CHUNK_SIZE])
def test_truncate_of_a_sealed_file(reg, size):
    p = sealing(reg)
    data = randbytes(SIZE)
    p.held = p.create("big")
    write_in_order(p, "big", data, seed=2)
    ino = p.node("big")
    p.truncate("big", size)
    assert p.read("big") == data[:size] and p.stat("big").size == size
    if size in (0, SIZE):
        assert ino.running is not None and ino.running.size == size, "still followed: no copy"
    else:
        assert ino.sealed == 0 and names(p) == [str(ino.id)], "joined"
    more = randbytes(CHUNK_SIZE + 3)
    write_in_order(p, "big", more) if size == 0 else p.write("big", more, size)
    commit_draft(reg, p.draft)
    assert version_files(reg, "w", 0)["big"] == (data[:size] + more, False)


def test_times_of_a_sealed_file_are_its_tails(reg):
    p = sealing(reg)
    p.held = p.create("big")
    data = randbytes(2 * CHUNK_SIZE)
    write_in_order(p, "big", data, seed=3)
    p.write("big", b"x", 2 * CHUNK_SIZE)  # seals chunk 1: the tail is new
    ino = p.node("big")
    assert ino.sealed == 2
    filedata.set_times(p.draft, ino, 1_000_000_000, 2_000_000_000)
    assert p.stat("big").mtime == 2_000_000_000 and p.stat("big").size == 2 * CHUNK_SIZE + 1
    commit_draft(reg, p.draft)
    assert reg.lookup(reg.version("proj", "w", 0).root, "big").mtime_ns == 2_000_000_000


@pytest.mark.parametrize("step", ["sealed", "no tail", "join cut short", "set aside"])
def test_a_restart_joins_what_a_killed_daemon_left(reg, step):
    """The states every step leaves on disk: pieces (with or without a tail) and a
    join killed after its rename (pieces beside the joined file) all come back as
    the one data file with the bytes written; a set-aside draft exports them."""
    p = sealing(reg)
    data = randbytes(SIZE)
    p.held = p.create("big")
    write_in_order(p, "big", data, seed=4)
    ino = p.node("big")
    whole = p.draft.data_path(ino)
    if step == "no tail":  # killed between a seal and the write after it
        data = data[:3 * CHUNK_SIZE]
        os.unlink(datafiles.tail_path(whole))
    if step == "join cut short":  # killed after the joined file's rename, before the pieces went
        with open(whole, "wb") as f:
            f.write(data)
    p.draft.close()
    if step == "set aside":
        export_files(p.draft.dir)
        with open(os.path.join(p.draft.dir, "files", "big"), "rb") as f:
            assert f.read() == data
        return
    again = Paths(open_test_draft(reg, "w"))  # (recover() ran: a new process's view)
    recover(again.draft)
    assert names(again) == [str(ino.id)] and again.read("big") == data
    commit_draft(reg, again.draft)
    assert version_files(reg, "w", 0)["big"] == (data, False)


def test_a_first_write_past_the_first_chunk_is_never_sealed(reg):
    """Only a data file of exactly one chunk is sealed: one that got bigger in one
    write (in-process; FUSE writes are 1 MiB at most) stays one data file."""
    p = sealing(reg)
    data = randbytes(2 * CHUNK_SIZE + 3)
    p.held = p.create("big")
    p.write("big", data[:CHUNK_SIZE + 1], 0)
    p.write("big", data[CHUNK_SIZE + 1:], CHUNK_SIZE + 1)
    ino = p.node("big")
    assert ino.sealed == 0 and names(p) == [str(ino.id)] and ino.running is not None
    assert p.read("big") == data
    commit_draft(reg, p.draft)
    assert version_files(reg, "w", 0)["big"] == (data, False)


def test_without_a_local_store_nothing_is_sealed(reg, tmp_path):
    p = Paths(open_test_draft(reg, "w"))
    assert p.draft.seal_chunks is False  # the default; the mount turns it on (livedraft.py)
    p.held = p.create("big")
    write_in_order(p, "big", randbytes(2 * CHUNK_SIZE + 1))
    assert names(p) == [str(p.node("big").id)]


def test_random_operations_on_a_sealing_file_match_a_model(reg):
    """Seeded random appends (most crossing chunk ends), reads, writes elsewhere,
    truncates, times, chunks stored ahead and restarts of the draft, each checked
    against a bytearray model; then the commit publishes exactly the model."""
    rnd = random.Random(10)
    p = sealing(reg)
    p.held = p.create("f")
    model = bytearray()
    seen = {"sealed": 0, "joined": 0}
    for step in range(150):
        ino = p.node("f")
        before = ino.sealed
        op = rnd.choice(["append"] * 16 + ["read", "overwrite", "truncate", "ahead", "ahead", "utime", "restart"])
        if op == "append" and len(model) < 4 * CHUNK_SIZE:
            chunk = randbytes(rnd.choice([1, 4096, 1 << 20, 3 << 20, 5 << 20]))
            p.write("f", chunk, len(model))
            model += chunk
        elif op == "overwrite" and model and rnd.random() < 0.5:
            off = rnd.randrange(len(model))
            piece = randbytes(rnd.choice([1, 5000, 1 << 20]))
            p.write("f", piece, off)
            model[off:off + len(piece)] = piece
        elif op == "truncate" or len(model) >= 4 * CHUNK_SIZE:
            size = rnd.choice([0, 0, len(model), rnd.randrange(len(model) + 1)])
            p.truncate("f", size)
            model = model[:size]
        elif op == "ahead" and ino.running is not None:
            for k in range(len(ino.running.keys)):
                store_ahead(reg.store, p.draft, ino, ino.running, k)
        elif op == "utime":
            filedata.set_times(p.draft, ino, None, 1_500_000_000_000_000_000 + step)
            assert p.stat("f").mtime == 1_500_000_000_000_000_000 + step
        elif op == "restart" and rnd.random() < 0.5:
            p.draft.close()
            p = Paths(open_test_draft(reg, "w"))  # recover() joins what is sealed
            p.draft.seal_chunks = True
            p.held = p.node("f")
            assert p.node("f").sealed == 0
        off = rnd.randrange(len(model) + 1)
        assert filedata.read(p.draft, p.node("f"), off, 3 << 20) == bytes(model[off:off + (3 << 20)]), step
        assert p.stat("f").size == len(model), step
        seen["sealed"] = max(seen["sealed"], p.node("f").sealed)
        seen["joined"] += before > 0 and p.node("f").sealed == 0 and op != "restart"
    assert seen["sealed"] >= 3 and seen["joined"] >= 2, seen  # (the seed does reach both)
    assert p.read("f") == bytes(model)
    commit_draft(reg, p.draft)
    assert version_files(reg, "w", 0)["f"] == (bytes(model), False)
    for key in reg.lookup(reg.version("proj", "w", 0).root, "f").chunks:
        with open(blob(reg, key), "rb") as f:
            assert xxhash.xxh3_128_hexdigest(f.read()) == key
