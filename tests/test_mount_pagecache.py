"""Small files read ahead are stored into the kernel page cache (FUSE
notify_store), on a real mount: the bytes a reader then gets are right, and
they reach it without a READ request to the daemon.  The mounts here use
--python-reads: reads of a local store's small files are otherwise answered by
pyfuse3's native threads, without the chunk reader and its read-ahead
(test_mount_native.py)."""
from __future__ import annotations

import os
import time

from conftest import randbytes
from mountutil import mounted
from test_mount_read import commit

from artifactfs.registry.versions import Registry


def wait_for(m, key: str, at_least: int, timeout: float = 60.0) -> dict:
    """The mount's stats once stats[key] >= at_least (the stores are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        s = m.stats()
        if s[key] >= at_least or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def test_small_files_read_in_order_come_from_the_page_cache(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {f"d/{i:03}.bin": randbytes(20_000 + 37 * i) for i in range(60)}
    commit(store, "pc", str(tmp_path / "src"), files)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--python-reads") as m:
        root = m.p("pc", "pc:v0", "d")
        names = sorted(os.listdir(root))  # the kernel now knows every file's inode

        def read(name: str) -> None:
            with open(os.path.join(root, name), "rb") as f:
                assert f.read() == files[f"d/{name}"]
        read(names[0])
        read(names[1])  # in order: the next files are fetched and fed to the kernel
        s = wait_for(m, "pages_fed", 30)
        assert s["pages_fed"] >= 30
        reads = s["reads"]
        for name in names[2:32]:  # fed: served by the kernel, byte for byte, no READ
            read(name)
        assert m.stats()["reads"] == reads
        for name in names[32:]:
            read(name)
        # all but the first two, opened before, and without OPEN requests (noopen.py) names[34]: the
        # first past the 32 fed after names[1], which the daemon hears of only when it is read
        fed = wait_for(m, "pages_fed", len(names) - 3)["pages_fed"]
        assert fed >= len(names) - 3
        time.sleep(0.5)  # a re-feed would be offered within the reads below; give stores time to land
        for name in names:  # a warm re-read in order: the kernel has the pages, nothing is fed again
            read(name)
        time.sleep(0.5)
        assert m.stats()["pages_fed"] == fed


def test_files_read_ahead_are_bounded_in_bytes(tmp_path):
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    size = 2 * 1024 * 1024 + 1
    files = {f"s/{i:02}.bin": randbytes(size) for i in range(30)}
    commit(store, "pw", str(tmp_path / "src"), files)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--python-reads") as m:
        root = m.p("pw", "pw:v0", "s")
        names = sorted(os.listdir(root))
        for name in names[:2]:  # in order: read-ahead starts, up to 32 MiB of the next files
            with open(os.path.join(root, name), "rb") as f:
                assert f.read() == files[f"s/{name}"]
        ahead = m.stats()["readahead"]
        assert 8 <= ahead and ahead * size <= 32 * 1024 * 1024


def test_a_folder_read_in_no_order_is_fetched_into_the_page_cache(tmp_path):
    """A shuffled loader: after a few out-of-order opens in a folder, its other
    small files are fetched in the background and reach the reader without a READ."""
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    files = {f"cls/{i:03}.bin": os.urandom(3000 + 11 * i) for i in range(60)}
    commit(store, "sh", str(tmp_path / "src"), files)
    with mounted(store, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--python-reads") as m:
        root = m.p("sh", "sh:v0", "cls")
        names = sorted(os.listdir(root))
        order = [names[i] for i in (40, 3, 25, 10)]  # scattered: not the next name each time
        for name in order:
            with open(os.path.join(root, name), "rb") as f:
                assert f.read() == files[f"cls/{name}"]
        s = wait_for(m, "pages_fed", len(names) - len(order), timeout=60)
        assert s["pages_fed"] >= len(names) - len(order)
        reads = s["reads"]
        for name in reversed(names):  # any order: all from the page cache, byte for byte
            if name not in order:
                with open(os.path.join(root, name), "rb") as f:
                    assert f.read() == files[f"cls/{name}"]
        assert m.stats()["reads"] == reads
