"""The mount's Operations called directly, in this process, under trio, over a
real local store and a real chunk cache: no kernel, no FUSE session.  These sit
beside the real-mount tests (test_mount_*.py): a failure here points at the
layer (dispatch, errno map, reader, thread limiter, draft gate) rather than at
"the mount".

The kernel is left out in two places only: readdir is tested through
Operations.list_dir, the method readdir hands pyfuse3.readdir_reply to (a
ReaddirToken exists only inside a FUSE request), and the page-cache stores of
read-ahead go to a recording function instead of pyfuse3.notify_store (the
PageFeeder's `store` parameter).  Plain `trio.run` per test: no pytest plugin
is needed for that."""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing
from conftest import flipped, randbytes
from core_util import write_files

from artifactfs.api.artifact import Artifact
from artifactfs.errors import (ConflictError, CorruptStoreError, DigestMismatchError, InvalidNameError, NotFoundError,
                               PreconditionFailed, UsageError)
from artifactfs.mount.daemon import build
from artifactfs.mount.errnos import to_fuse_error
from artifactfs.mount.evict import InodeLimit
from artifactfs.mount.draftgate import Gate
from artifactfs.mount.options import MountOptions
from artifactfs.mount.pagecache import PageFeeder
from artifactfs.mount.parts import MountParts
from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry, blob_key

PROJECT = "proj"
BIG = 3 * CHUNK_SIZE + 12345  # four chunks, the last one short
WAIT = 60.0  # seconds: generous bound on waits for a condition (a loaded machine)


def _ctx() -> pyfuse3.RequestContext:
    return pyfuse3.RequestContext()  # uid, gid, pid 0: no lineage is recorded for pid 0


@pytest.fixture
def store(tmp_path) -> str:
    """A local store with c:v0 (a 4-chunk file, small files in one folder, a symlink)."""
    url = str(tmp_path / "store")
    Registry.open(url, create=True)
    src = write_files(str(tmp_path / "src"), {
        "big.bin": randbytes(BIG), "small/a.txt": b"a" * 100, "small/b.txt": b"b" * 200,
        "small/c.txt": b"c" * 300, "small/d.txt": b"d" * 400, "README.md": b"hello\n"})
    os.symlink("README.md", os.path.join(src, "link"))
    art = Artifact("c", "dataset", store=url)
    art.add_dir(src, follow_symlinks=False)
    art.save(PROJECT)
    return url


def _parts(store: str, tmp_path, threads: int = 4, read_only: bool = True,
           send_opens: bool = True) -> tuple[MountParts, list]:
    """The filesystem daemon.build makes for these options (by default answering
    OPEN, as with a stock pyfuse3: test_mount_noopen.py has the other way);
    page-cache stores recorded."""
    opts = MountOptions(mountpoint=str(tmp_path / "mnt"), store=store, project=PROJECT,
                        cache_dir=str(tmp_path / "cache"), cache_size=1 << 30, threads=threads,
                        read_only=read_only, send_opens=send_opens)
    parts = build(opts)
    fed: list[tuple[int, bytes]] = []
    parts.ctx.reader.feeder = PageFeeder(store=lambda ino, off, data: fed.append((ino, bytes(data))))
    return parts, fed


def serve(parts: MountParts, body: Callable[[MountParts], Awaitable[None]]) -> None:
    """Run body(parts) under trio with the reader's nursery set, as the daemon serves."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            parts.ctx.reader.nursery = nursery
            with trio.fail_after(WAIT):
                await body(parts)
            nursery.cancel_scope.cancel()
        parts.ctx.reader.nursery = None
        for hook in parts.shutdown_hooks:
            await hook()
    trio.run(main)


async def lookup_path(parts: MountParts, *names: str) -> pyfuse3.EntryAttributes:
    ino = pyfuse3.ROOT_INODE
    attrs = None
    for name in names:
        attrs = await parts.ops.lookup(ino, name.encode(), _ctx())
        ino = attrs.st_ino
    assert attrs is not None
    return attrs


async def read_all(parts: MountParts, ino: int, size: int, block: int = 128 * 1024) -> bytes:
    fi = await parts.ops.open(ino, os.O_RDONLY, _ctx())
    try:
        out = []
        for off in range(0, size, block):
            out.append(bytes(await parts.ops.read(fi.fh, off, block)))
        return b"".join(out)
    finally:
        await parts.ops.release(fi.fh)


def fuse_errno(excinfo: pytest.ExceptionInfo) -> int:
    return excinfo.value.errno


# -- dispatch -----------------------------------------------------------------------------

def test_lookup_getattr_open_read_through_operations(store, tmp_path):
    reg = Registry.open(store)
    parts, _ = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        version = await lookup_path(parts, "c", "c:v0")
        assert stat.S_ISDIR(version.st_mode)
        attrs = await lookup_path(parts, "c", "c:v0", "big.bin")
        assert stat.S_ISREG(attrs.st_mode) and attrs.st_size == BIG
        assert (await parts.ops.getattr(attrs.st_ino, _ctx())).st_ino == attrs.st_ino
        data = await read_all(parts, attrs.st_ino, BIG)
        entry = reg.lookup(reg.get(PROJECT, "c", "v0").root, "big.bin")
        assert len(data) == BIG and len(entry.chunks) == 4
        stats = json.loads(await parts.ops.getxattr(pyfuse3.ROOT_INODE, b"user.artifactfs.stats", _ctx()))
        assert stats["read_bytes"] == BIG and stats["threads"] == 4 and stats["threads_busy"] == 0
        link = await lookup_path(parts, "c", "c:v0", "link")
        assert await parts.ops.readlink(link.st_ino, _ctx()) == b"README.md"
        alias = await lookup_path(parts, "c", "c:latest")
        assert await parts.ops.readlink(alias.st_ino, _ctx()) == b"c:v0"
        same = await lookup_path(parts, "c", "c@v0", "README.md")  # the spelling without ':'
        assert await read_all(parts, same.st_ino, 100) == b"hello\n"
    serve(parts, body)


def test_errors_reach_the_caller_as_errno(store, tmp_path):
    parts, _ = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        ops = parts.ops
        for names, code in ((("nope",), errno.ENOENT), (("c", "c:v9"), errno.ENOENT),
                            (("c", "c:v0", "missing"), errno.ENOENT), (("c", "c:v0", "big.bin", "x"), errno.ENOTDIR),
                            (("x" * 256,), errno.ENAMETOOLONG)):
            with pytest.raises(pyfuse3.FUSEError) as e:
                await lookup_path(parts, *names)
            assert fuse_errno(e) == code, names
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.getattr(123456789, _ctx())  # an inode the table never handed out
        assert fuse_errno(e) == errno.ESTALE
        f = await lookup_path(parts, "c", "c:v0", "README.md")
        d = await lookup_path(parts, "c", "c:v0")
        for call, code in ((ops.open(f.st_ino, os.O_WRONLY, _ctx()), errno.EROFS),
                           (ops.open(d.st_ino, os.O_RDONLY, _ctx()), errno.EISDIR),
                           (ops.mkdir(d.st_ino, b"new", 0o755, _ctx()), errno.EROFS),
                           (ops.unlink(d.st_ino, b"README.md", _ctx()), errno.EROFS),
                           (ops.getxattr(f.st_ino, b"user.nope", _ctx()), pyfuse3.ENOATTR),
                           (ops.setxattr(f.st_ino, b"user.x", b"1", _ctx()), errno.EROFS),
                           (ops.opendir(f.st_ino, _ctx()), errno.ENOTDIR)):
            with pytest.raises(pyfuse3.FUSEError) as e:
                await call
            assert fuse_errno(e) == code
        names = await ops.listxattr(f.st_ino, _ctx())
        assert b"user.artifact.digest" in names
        size = await ops.getxattr(f.st_ino, b"user.artifact.size", _ctx())
        assert size == b"6"
    serve(parts, body)


def test_readdir_pages_and_counts_lookups(store, tmp_path):
    parts, _ = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        d = await lookup_path(parts, "c", "c:v0", "small")
        fh = await parts.ops.opendir(d.st_ino, _ctx())
        got: list[tuple[bytes, int, int]] = []

        def reply(limit: int) -> Callable[[bytes, pyfuse3.EntryAttributes, int], bool]:
            def take(name: bytes, attrs: pyfuse3.EntryAttributes, next_id: int) -> bool:
                if len(got) >= limit:
                    return False  # the kernel's buffer is full: this entry is not taken
                got.append((name, attrs.st_ino, next_id))
                return True
            return take
        parts.ops.list_dir(fh, 0, reply(2))
        assert [g[0] for g in got] == [b"a.txt", b"b.txt"]
        parts.ops.list_dir(fh, got[-1][2], reply(10))  # the kernel resumes at the last next_id
        assert [g[0] for g in got] == [b"a.txt", b"b.txt", b"c.txt", b"d.txt"]
        await parts.ops.releasedir(fh)
        # each entry handed over counts as one lookup: forgetting it once drops the node
        ino = got[0][1]
        assert parts.table.get(ino) is not None
        await parts.ops.forget([(ino, 1)])
        assert parts.table.get(ino) is None
        # a node forgotten meanwhile comes back under the same inode number
        again = await lookup_path(parts, "c", "c:v0", "small", "a.txt")
        assert again.st_ino == ino
    serve(parts, body)


def test_the_inode_soft_limit_invalidates_the_folders_used_least_recently(store, tmp_path):
    parts, _ = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        version = await lookup_path(parts, "c", "c:v0")  # a version folder: evictable
        small = await lookup_path(parts, "c", "c:v0", "small")
        await lookup_path(parts, "c", "c:v0", "README.md")  # a lookup in c:v0 uses it again
        invalidated: list[tuple[int, bytes]] = []
        limit = InodeLimit(parts.table, 1, parts.ctx.threads, lambda parent, name: invalidated.append((parent, name)))
        assert limit.step() == 1  # a quarter of the 2 tracked folders, at least one
        assert invalidated == [(version.st_ino, b"small")]  # c:v0/small/ was used least recently
        assert limit.step() == 1 and invalidated[1][1] == b"c:v0"
        assert limit.step() == 0  # nothing tracked is left (the kernel would now send FORGET)
        assert small.st_ino != version.st_ino
    serve(parts, body)


# -- the errno map ------------------------------------------------------------------------

@pytest.mark.parametrize("error, code, level, traceback", [
    (NotFoundError("no such version"), errno.ENOENT, None, False),
    (InvalidNameError("bad name"), errno.EINVAL, None, False),
    (UsageError("metadata must be a JSON object"), errno.EINVAL, None, False),
    (CorruptStoreError("tree abc does not parse"), errno.EIO, logging.ERROR, False),
    (ConflictError("moved meanwhile"), errno.EBUSY, logging.ERROR, False),
    (DigestMismatchError("c:v0/x: digest mismatch"), errno.EIO, logging.ERROR, False),
    (OSError(errno.ENOSPC, "full"), errno.ENOSPC, None, False),
    (OSError(errno.EIO, "disk"), errno.EIO, logging.ERROR, False),
    (pyfuse3.FUSEError(errno.EXDEV), errno.EXDEV, None, False),
    (KeyError("a bug"), errno.EIO, logging.ERROR, True),
    (PreconditionFailed("an internal signal that escaped"), errno.EIO, logging.ERROR, True),
    (AttributeError("another bug"), errno.EIO, logging.ERROR, True),
])
def test_errno_map(caplog, error, code, level, traceback):
    caplog.set_level(logging.DEBUG, logger="artifactfs.mount")
    try:
        raise error  # raised, so that a traceback exists to be logged (or not)
    except Exception as e:
        mapped = to_fuse_error(e, "read")
    assert mapped.errno == code
    records = [r for r in caplog.records if r.name == "artifactfs.mount"]
    if level is None:
        assert records == []
    else:
        assert [r.levelno for r in records] == [level]
        assert records[0].getMessage().startswith("read: ")
        assert (records[0].exc_info is not None) == traceback


def test_a_bug_in_a_node_is_eio_with_a_traceback_and_the_mount_goes_on(store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="artifactfs.mount")
    parts, _ = _parts(store, tmp_path)

    class Broken(parts.table.kinds["symlink"]):  # type: ignore[misc,name-defined]
        async def readlink(self) -> str:
            return {}["missing"]  # a bug: KeyError
    parts.table.kinds["symlink"] = Broken

    async def body(parts: MountParts) -> None:
        link = await lookup_path(parts, "c", "c:v0", "link")
        with pytest.raises(pyfuse3.FUSEError) as e:
            await parts.ops.readlink(link.st_ino, _ctx())
        assert fuse_errno(e) == errno.EIO
        f = await lookup_path(parts, "c", "c:v0", "README.md")  # the next request is served as usual
        assert await read_all(parts, f.st_ino, 100) == b"hello\n"
    serve(parts, body)
    bugs = [r for r in caplog.records if r.getMessage() == "readlink: unexpected error"]
    assert len(bugs) == 1 and bugs[0].exc_info is not None and bugs[0].exc_info[0] is KeyError


# -- the reader ---------------------------------------------------------------------------

def _corrupt(store: str, key: str) -> None:
    path = Registry.open(store).store.local_path(blob_key(key))
    data = open(path, "rb").read()
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(flipped(data, len(data) // 2))


def test_a_corrupt_chunk_is_eio_never_wrong_bytes(store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="artifactfs.mount")
    reg = Registry.open(store)
    entry = reg.lookup(reg.get(PROJECT, "c", "v0").root, "big.bin")
    _corrupt(store, entry.chunks[1])
    parts, _ = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        f = await lookup_path(parts, "c", "c:v0", "big.bin")
        fi = await parts.ops.open(f.st_ino, os.O_RDONLY, _ctx())
        first = bytes(await parts.ops.read(fi.fh, 0, 4096))
        assert len(first) == 4096
        for _ in range(2):  # not cached as a failure: the second read fetches again, and fails again
            with pytest.raises(pyfuse3.FUSEError) as e:
                await parts.ops.read(fi.fh, CHUNK_SIZE, 4096)
            assert fuse_errno(e) == errno.EIO
        await parts.ops.release(fi.fh)
        assert parts.ctx.reader.counters["fetch_errors"] == 2
    serve(parts, body)
    lines = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "artifactfs.mount"]
    assert len(lines) == 2 and all("c:v0/big.bin" in r.getMessage() for r in lines)
    # the first read found the damage and set the blob aside (store/aside.py): the second finds it missing
    assert "moved aside to damaged/" in lines[0].getMessage() and "missing" in lines[1].getMessage()
    assert all(r.exc_info is None for r in lines)  # a user-facing error: no traceback
    assert [r for r in caplog.records if "is damaged: moved aside" in r.getMessage()]


def test_sequential_reads_fetch_ahead_random_ones_do_not(store, tmp_path):
    parts, _ = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        counters = parts.ctx.reader.counters
        f = await lookup_path(parts, "c", "c:v0", "big.bin")
        fi = await parts.ops.open(f.st_ino, os.O_RDONLY, _ctx())
        for off in (3 * CHUNK_SIZE, 0, 2 * CHUNK_SIZE):  # jumps: no read-ahead
            await parts.ops.read(fi.fh, off, 4096)
        assert counters["readahead"] == 0
        await parts.ops.release(fi.fh)
        fi = await parts.ops.open(f.st_ino, os.O_RDONLY, _ctx())
        block = 128 * 1024
        off = 0
        while counters["readahead"] == 0 and off < CHUNK_SIZE:  # 1 MiB in order turns read-ahead on
            await parts.ops.read(fi.fh, off, block)
            off += block
        assert counters["readahead"] >= 1 and off <= 2 * 1024 * 1024
        reads_before = counters["chunk_reads"] - counters["memory_hits"]
        await trio.testing.wait_all_tasks_blocked()
        while parts.ctx.reader._inflight:  # the fetches ahead settle
            await trio.sleep(0.01)
        data = await read_all(parts, f.st_ino, BIG)  # the rest comes from memory
        assert len(data) == BIG
        assert counters["chunk_reads"] - counters["memory_hits"] == reads_before
        await parts.ops.release(fi.fh)
    serve(parts, body)


def test_concurrent_readers_of_one_chunk_share_one_fetch(store, tmp_path):
    parts, _ = _parts(store, tmp_path, threads=1)

    async def body(parts: MountParts) -> None:
        f = await lookup_path(parts, "c", "c:v0", "big.bin")
        # three opens: a fourth out-of-order open in one folder would fetch the folder behind (siblings.py)
        handles = [await parts.ops.open(f.st_ino, os.O_RDONLY, _ctx()) for _ in range(3)]
        results: list[bytes] = []
        limiter = parts.ctx.threads.limiter
        await limiter.acquire()  # hold the only worker thread: every reader must park on the fetch
        async with trio.open_nursery() as nursery:
            for fi in handles:
                nursery.start_soon(lambda fh: _append(results, parts.ops.read(fh, 5, 10)), fi.fh)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1  # one fetch, two waiters
            assert parts.ctx.reader.counters["waits"] == 2
            limiter.release()
        assert len(set(results)) == 1 and len(results) == 3 and len(results[0]) == 10
        for fi in handles:
            await parts.ops.release(fi.fh)
    serve(parts, body)


async def _append(out: list[bytes], read: Awaitable[Any]) -> None:
    out.append(bytes(await read))


def test_opening_a_folders_files_in_order_feeds_the_next_ones_to_the_page_cache(store, tmp_path):
    parts, fed = _parts(store, tmp_path)

    async def body(parts: MountParts) -> None:
        d = await lookup_path(parts, "c", "c:v0", "small")
        fh = await parts.ops.opendir(d.st_ino, _ctx())
        inodes: dict[bytes, int] = {}
        parts.ops.list_dir(fh, 0, lambda name, attrs, _: inodes.setdefault(name, attrs.st_ino) is not None)
        for name, size in ((b"a.txt", 100), (b"b.txt", 200)):  # two in name order: sequential
            assert await read_all(parts, inodes[name], 1000) == name[:1] * size
        while len(fed) < 2:  # c, d: fetched ahead, verified, handed to the page cache
            await trio.sleep(0.01)
        assert sorted(fed) == [(inodes[b"c.txt"], b"c" * 300), (inodes[b"d.txt"], b"d" * 400)] or \
            sorted(fed) == sorted([(inodes[b"c.txt"], b"c" * 300), (inodes[b"d.txt"], b"d" * 400)])
    serve(parts, body)


# -- the thread limiter -------------------------------------------------------------------

def test_every_blocking_call_waits_for_the_mounts_one_limiter(store, tmp_path):
    parts, _ = _parts(store, tmp_path, threads=1)
    assert parts.ctx.threads.limiter.total_tokens == 1  # --threads sizes it

    async def body(parts: MountParts) -> None:
        limiter = parts.ctx.threads.limiter
        done: list[str] = []

        async def lookup_version() -> None:  # a store listing and a version record
            await lookup_path(parts, "c", "c:v0")
            done.append("lookup")
        await limiter.acquire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lookup_version)
            await trio.testing.wait_all_tasks_blocked()
            assert done == [] and limiter.statistics().tasks_waiting == 1
            limiter.release()
        assert done == ["lookup"]
        f = await lookup_path(parts, "c", "c:v0", "big.bin")
        fi = await parts.ops.open(f.st_ino, os.O_RDONLY, _ctx())
        read: list[bytes] = []
        await limiter.acquire()  # a chunk fetch (it used trio's default limiter of 40 before)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _append(read, parts.ops.read(fi.fh, 0, 10)))
            await trio.testing.wait_all_tasks_blocked()
            assert read == [] and limiter.statistics().tasks_waiting == 1
            limiter.release()
        assert len(read[0]) == 10
        await parts.ops.release(fi.fh)
    serve(parts, body)


# -- drafts: writes through Operations, and the gate ----------------------------------------

def test_a_write_through_operations_becomes_the_next_version(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    parts, _ = _parts(store, tmp_path, read_only=False)

    async def body(parts: MountParts) -> None:
        draft = await lookup_path(parts, "c", "draft")
        assert stat.S_ISDIR(draft.st_mode)
        fi, attrs = await parts.ops.create(draft.st_ino, b"new.txt", 0o644, os.O_WRONLY | os.O_CREAT, _ctx())
        assert await parts.ops.write(fi.fh, 0, b"written in process\n") == 19
        await parts.ops.release(fi.fh)
        await parts.ops.unlink(draft.st_ino, b"README.md", _ctx())
        with pytest.raises(pyfuse3.FUSEError) as e:
            await parts.ops.create(draft.st_ino, b"x" * 256, 0o644, os.O_WRONLY | os.O_CREAT, _ctx())
        assert fuse_errno(e) == errno.ENAMETOOLONG
    serve(parts, body)  # the shutdown hooks commit the dirty draft, as at unmount
    reg = Registry.open(store)
    info = reg.get(PROJECT, "c", "v1")
    entries = reg.load(info.root)
    assert "new.txt" in entries and "README.md" not in entries and "big.bin" in entries


def test_the_gate_lets_changes_run_together_and_a_commit_alone():
    order: list[str] = []

    async def main() -> None:
        with trio.fail_after(WAIT):
            await run(Gate())

    async def run(gate: Gate) -> None:
        release_changes = trio.Event()

        async def change(name: str) -> None:
            await gate.enter()
            order.append(f"{name} in")
            try:
                await release_changes.wait()
            finally:
                order.append(f"{name} out")
                gate.leave()

        async def commit() -> None:
            async with gate.commit():
                order.append("commit")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(change, "a")
            nursery.start_soon(change, "b")
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(order) == ["a in", "b in"]  # changes run side by side
            nursery.start_soon(commit)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(change, "late")  # a commit waits: new changes queue behind it
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(order) == ["a in", "b in"]
            release_changes.set()
        assert sorted(order[:4]) == ["a in", "a out", "b in", "b out"]
        assert order[4:] == ["commit", "late in", "late out"]  # the commit ran alone, before the late change
    trio.run(main)
