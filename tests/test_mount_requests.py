"""How many FUSE requests, and of which kind, one warm `open()` + `read()` +
`close()` of a version file costs (docs/mount-semantics.md, "Requests per
open"), counted by the patched pyfuse3 ("requests" in user.artifactfs.stats:
per FUSE opcode, answered by its native reader threads or by Python)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyfuse3
import pytest
from conftest import skip_or_fail
from mountutil import Mount, mount_factory  # noqa: F401 (fixture)
from test_mount_noopen import FILES, store  # noqa: F401 (fixture: FILES as version ds:v0)

MODES = {"native OPEN": (), "--no-opens": ("--no-opens",)}
OPENS = 20  # warm opens counted per file
WAIT = 30.0  # seconds a RELEASE (sent in the background) may take to be counted, under load


@pytest.fixture(params=list(MODES), ids=list(MODES))
def mnt(request, store, mount_factory):  # noqa: F811
    if not hasattr(pyfuse3, "fastpath_request_counts"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    m = mount_factory(store, *MODES[request.param])
    m.mode = request.param
    return m


def counts(mnt: Mount) -> dict[tuple[str, str], int]:
    """{(opcode, "native" | "python"): requests so far}, less those that reading the
    stats costs: its GETXATTR, and the mount root's GETATTR (through Python: the root's
    attributes last 1 s, and default_permissions checks them before the GETXATTR)."""
    return {(op, who): n for op, by in mnt.stats()["requests"].items() for who, n in by.items()
            if op != "GETXATTR" and (op, who) != ("GETATTR", "python")}


def added(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def settled(mnt: Mount, before: dict[tuple[str, str], int], expected: dict[tuple[str, str], int]) -> dict:
    """The requests since `before`, once they reached `expected` (or WAIT passed):
    RELEASE is sent in the background after close() returns."""
    deadline = time.monotonic() + WAIT
    while True:
        got = added(before, counts(mnt))
        if all(got.get(k, 0) >= n for k, n in expected.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@contextmanager
def folder(path: str) -> Iterator[Callable[[str], bytes]]:
    """read(name) of files in one folder, opened relative to it, by Python's open()
    (so isatty() too), and the path walk to it made once: only the file's own
    requests are counted (the collection's and the alias's entries expire after 1 s)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def read(name: str) -> bytes:
        with open(name, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=fd)) as f:
            return f.read()
    try:
        yield read
    finally:
        os.close(fd)


@pytest.mark.parametrize("spelling", ["ds:v0", "ds:latest", "ds@v0"])
def test_a_warm_open_read_close_costs_only_the_requests_it_must(mnt, spelling):
    """By default: OPEN (refuses write access), the IOCTL of Python's isatty() (the
    kernel sends every ioctl: fs/fuse/ioctl.c keeps no ENOSYS) and RELEASE, all
    answered natively; no FLUSH (FOPEN_NOFLUSH), no GETATTR, no READ, no LOOKUP.
    With --no-opens: the IOCTL alone.  The same through every spelling."""
    per_open = {("OPEN", "native"): 1, ("IOCTL", "native"): 1, ("RELEASE", "native"): 1}
    if mnt.mode == "--no-opens":
        per_open = {("IOCTL", "native"): 1}
    with folder(mnt.p("ds", spelling)) as read:
        start = counts(mnt)
        for name, data in FILES.items():  # the first opens: LOOKUP, READ (--no-opens) ...
            assert read(name) == data
        for name, data in FILES.items():  # ... and the GETATTR after a READ (atime)
            assert read(name) == data
        if mnt.mode != "--no-opens":  # the background RELEASEs of those opens
            settled(mnt, start, {("RELEASE", "native"): 2 * len(FILES)})
        before = counts(mnt)
        for _ in range(OPENS):
            for name, data in FILES.items():
                assert read(name) == data
        expected = {k: v * OPENS * len(FILES) for k, v in per_open.items()}
        assert settled(mnt, before, expected) == expected


def test_the_first_native_open_stores_the_file_so_no_read_and_no_getattr_follow(store, mount_factory):  # noqa: F811
    """By default the OPEN of a small version file whose pages the kernel lacks
    stores the whole file into its page cache before it is answered: no READ
    then, and so no GETATTR at the next open (a READ marks the atime stale, and
    Python's open() makes an fstat()).  The bytes are the version's."""
    if not hasattr(pyfuse3, "fastpath_open_stores"):
        skip_or_fail("this pyfuse3 lacks third_party/pyfuse3/artifactfs.patch (make setup builds it)")
    mnt = mount_factory(store)
    with folder(mnt.p("ds", "ds:v0")) as read:
        stored = mnt.stats()["native_open_stores"]
        before = counts(mnt)
        for name, data in FILES.items():
            assert read(name) == data
        got = settled(mnt, before, {("RELEASE", "native"): len(FILES)})
        assert got.get(("READ", "native"), 0) + got.get(("READ", "python"), 0) == 0
        assert got[("OPEN", "native")] == len(FILES)
        assert mnt.stats()["native_open_stores"] - stored == len(FILES)
        before = counts(mnt)
        for name, data in FILES.items():  # the second opens: no GETATTR
            assert read(name) == data
        expected = {("OPEN", "native"): len(FILES), ("IOCTL", "native"): len(FILES),
                    ("RELEASE", "native"): len(FILES)}
        assert settled(mnt, before, expected) == expected
        assert mnt.stats()["native_open_stores"] - stored == len(FILES)  # stored once
