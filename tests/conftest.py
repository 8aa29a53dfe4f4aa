"""Shared, generic fixtures.  Feature-specific helpers live in their own modules."""
from __future__ import annotations

import contextlib
import os
import random
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["s3server"]  # the s3_server / s3_url fixtures, for store_url's "s3" kind
STORE_KINDS = ("local", "s3")

_RANDOM = random.Random(0)


def seed_random(label: str) -> None:
    """Restart randbytes() from a seed made of `label`.  Every test starts from its
    own node id (autouse fixture below); a fixture of wider scope seeds itself."""
    _RANDOM.seed(zlib.crc32(label.encode()))


def randbytes(n: int) -> bytes:
    """Random-looking bytes that are the same on every run of a test (never os.urandom:
    a failure must be reproducible, and no outcome may hinge on chance)."""
    return _RANDOM.randbytes(n)


def flipped(data: bytes, at: int = -1) -> bytes:
    """`data` with every bit of byte `at` inverted: a corruption that always changes it
    (setting a byte to some value does nothing when it already holds that value)."""
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


@pytest.fixture(autouse=True)
def _seeded_random(request) -> None:
    seed_random(request.node.nodeid)


def skip_or_fail(reason: str) -> None:
    """Skip a test that cannot run here, except in CI, where it must fail instead."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` ("1m", "40m"), private (0700), mounted at `path` (made) for a full disk;
    unmounted afterwards.  Needs root (skip_or_fail otherwise)."""
    path.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)]).returncode != 0:
        skip_or_fail("needs root to mount a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path_factory, monkeypatch) -> None:
    """Keep every test (and the processes it starts) out of the real user's cache
    and data directories: the hash cache and the default store live there."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))


@pytest.fixture
def store_url(request, tmp_path) -> str:
    """A fresh store: a path (not yet created) for a local store, or, where a test
    module sets BOTH_STORES = True, also (second parameter) an s3:// URL of a fresh
    bucket on the test run's moto server.  A test of the local on-disk layout itself
    opts out with @pytest.mark.local_store."""
    if getattr(request, "param", "local") == "s3":
        return request.getfixturevalue("s3_url")
    return str(tmp_path / "store")


def pytest_generate_tests(metafunc) -> None:
    if getattr(metafunc.module, "BOTH_STORES", False) and "store_url" in metafunc.fixturenames \
            and not metafunc.definition.get_closest_marker("local_store"):
        metafunc.parametrize("store_url", STORE_KINDS, indirect=True)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "local_store: runs against the local store only (its on-disk layout)")


@pytest.fixture
def env(store_url, monkeypatch) -> str:
    """Point the API and CLI defaults at a fresh store and project 'proj'."""
    monkeypatch.setenv("ARTIFACTFS_STORE", store_url)
    monkeypatch.setenv("ARTIFACTFS_PROJECT", "proj")
    return store_url


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) no test may be skipped: a skip there hides a missing feature."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must not happen: {report.longrepr}"
