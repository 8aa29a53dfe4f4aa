"""The state dir (drafts staging, logs, control sockets) and the file digest cache
are the user's own: another user's symlink or folder planted where they go is
refused (state dir) or not used (digest cache, an optimisation), never followed."""
from __future__ import annotations

import os
import stat

import pytest
from conftest import skip_or_fail
from mountutil import cli, force_unmount, is_mounted, mounted

from artifactfs.registry.versions import Registry

OTHER = 65534  # nobody


@pytest.fixture
def shared(tmp_path):
    """A folder every user may create entries in, like /tmp (mode 1777)."""
    if os.geteuid() != 0:
        skip_or_fail("planting another user's files needs root")
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


def _planted_dir(path) -> None:
    path.mkdir()
    os.chown(path, OTHER, OTHER)
    os.chmod(path, 0o777)


def _mount_refused(tmp_path, env: dict, why: str) -> None:
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        done = cli("--store", store, "mount", str(point), env=env, timeout=60)
    finally:
        if is_mounted(str(point)):
            force_unmount(str(point), env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and why in done.stderr and "state dir" in done.stderr, done.stderr


def test_another_users_symlink_as_the_state_dir_is_refused(shared, tmp_path):
    theirs = shared / "theirs"
    _planted_dir(theirs)
    os.symlink(theirs, shared / "artifactfs")
    os.lchown(shared / "artifactfs", OTHER, OTHER)
    _mount_refused(tmp_path, {**os.environ, "XDG_STATE_HOME": str(shared)}, f"symbolic link of uid {OTHER}")
    assert stat.S_IMODE(os.stat(theirs).st_mode) == 0o777 and os.listdir(theirs) == []


def test_another_users_folder_as_the_state_dir_is_refused(shared, tmp_path):
    _planted_dir(shared / "artifactfs")
    _mount_refused(tmp_path, {**os.environ, "XDG_STATE_HOME": str(shared)}, f"owned by uid {OTHER}")
    assert os.listdir(shared / "artifactfs") == []


def test_the_state_dir_is_made_private(tmp_path):
    state = tmp_path / "state"
    (state / "artifactfs").mkdir(parents=True)
    os.chmod(state / "artifactfs", 0o755)
    store = str(tmp_path / "store")
    Registry.open(store, create=True)
    with mounted(store, tmp_path / "mnt", env={**os.environ, "XDG_STATE_HOME": str(state)}):
        assert stat.S_IMODE(os.stat(state / "artifactfs").st_mode) == 0o700


def test_a_planted_digest_cache_is_not_used(shared, tmp_path):
    """A symlink in place of the cache file would have SQLite create and write the
    file it points to; a cache folder of another user could feed put wrong digests."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"f")
    mine = tmp_path / "cache"
    (mine / "artifactfs").mkdir(parents=True)
    victim = tmp_path / "victim"
    os.symlink(victim, mine / "artifactfs" / "file-digests.sqlite")
    base = ["--store", str(tmp_path / "store"), "--project", "p"]
    env = {**os.environ, "XDG_CACHE_HOME": str(mine)}
    env.pop("ARTIFACTFS_HASH_CACHE", None)
    done = cli(*base, "put", str(src), "ds", "--type", "dataset", env=env)
    assert done.returncode == 0 and "not using the file digest cache" in done.stderr, done.stderr
    assert not os.path.lexists(victim)
    _planted_dir(shared / "artifactfs")
    done = cli(*base, "put", str(src), "ds", "--type", "dataset", env={**env, "XDG_CACHE_HOME": str(shared)})
    assert done.returncode == 0 and f"owned by uid {OTHER}" in done.stderr, done.stderr
    assert os.listdir(shared / "artifactfs") == []
