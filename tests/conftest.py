"""Shared, generic fixtures.  Feature-specific helpers live in their own modules."""
from __future__ import annotations

import os
import random
import zlib

import pytest

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


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path_factory, monkeypatch) -> None:
    """Keep every test (and the processes it starts) out of the real user's cache
    and data directories: the hash cache and the default store live there."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))


@pytest.fixture
def store_url(tmp_path) -> str:
    """A path (not yet created) for a fresh local store."""
    return str(tmp_path / "store")


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
