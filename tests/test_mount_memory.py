"""The inode soft limit: a walk over a version bigger than the limit leaves the
daemon holding about the limit, because the kernel is asked to forget the
version folders used least recently and the daemon frees them on FORGET."""
from __future__ import annotations

import os

import pyfuse3
import pytest
from conftest import skip_or_fail
from mountutil import mounted, wait_for

from artifactfs.api.artifact import Artifact
from artifactfs.chunks import upload
from artifactfs.registry.versions import Registry

FOLDERS, PER_FOLDER, LIMIT = 30, 100, 600


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A version of FOLDERS x PER_FOLDER files (one shared 5-byte blob)."""
    tmp = tmp_path_factory.mktemp("memory")
    url = str(tmp / "store")
    Registry.open(url, create=True)
    one = tmp / "one.txt"
    one.write_bytes(b"hello")
    art = Artifact("wide", "dataset", store=url)
    entry = upload.upload_file(art._reg(), str(one))
    for d in range(FOLDERS):
        for i in range(PER_FOLDER):
            art._stage(f"d{d:02d}/f{i:03d}.txt", entry, str(one), False)
    art.save("proj")
    return url


def inodes(m) -> int:
    return m.stats()["inodes"]


def test_walk_beyond_the_inode_limit_gives_inodes_back(store, tmp_path):
    with mounted(store, tmp_path / "mnt", "--inode-limit", str(LIMIT)) as m:
        root = m.p("wide", "wide@v0")
        seen = 0
        for dirpath, _, names in os.walk(root):
            for name in names:
                os.stat(os.path.join(dirpath, name))
                seen += 1
        assert seen == FOLDERS * PER_FOLDER  # every file was visible despite the evictions
        # the walk made 3,000+ inodes live; the daemon gets back to the limit
        wait_for(lambda: inodes(m) <= LIMIT, 60, f"the daemon to hold at most {LIMIT} inodes")
        with open(os.path.join(root, "d00", "f000.txt"), "rb") as f:  # an evicted folder is looked up again
            assert f.read() == b"hello"


def test_no_limit_keeps_what_the_kernel_holds(store, tmp_path):
    with mounted(store, tmp_path / "mnt", "--inode-limit", "0") as m:
        root = m.p("wide", "wide:v0")
        for dirpath, _, names in os.walk(root):
            for name in names:
                os.stat(os.path.join(dirpath, name))
        assert inodes(m) > FOLDERS * PER_FOLDER  # nothing evicted: the limit above is what frees them


def test_the_native_attribute_pins_give_memory_back_when_the_kernel_forgets(store, tmp_path):
    """The patched pyfuse3 pins the attributes of every version inode the kernel
    holds (fastpath.c); once the kernel forgot them (drop_caches), its table
    shrinks again instead of keeping the size of the largest walk."""
    if not hasattr(pyfuse3, "fastpath_pins"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    with mounted(store, tmp_path / "mnt", "--inode-limit", "0") as m:
        for dirpath, _, names in os.walk(m.p("wide", "wide:v0")):
            for name in names:
                os.stat(os.path.join(dirpath, name))
        walked = m.stats()
        assert walked["attrs_pinned"] > FOLDERS * PER_FOLDER and walked["attr_pin_slots"] >= 8192
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        wait_for(lambda: m.stats()["attr_pin_slots"] <= 2048, 60, "the pin table to shrink")
        assert m.stats()["attrs_pinned"] < 256
