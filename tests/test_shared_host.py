"""A machine shared by several users: what another local user can plant must not
stop a mount, answer for its daemon, or make the daemon (often root) write
where it should not."""
from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator

import pytest
import xxhash
from conftest import skip_or_fail
from draft_helpers import publish
from mountutil import cli, mounted
from s3server import s3_server, s3_url  # noqa: F401 (fixtures)

from artifactfs.drafts.syncclient import request, sockaddr
from artifactfs.errors import ArtifactfsError
from artifactfs.mount.state import host_key
from artifactfs.registry.versions import Registry

OTHER_UID = 65534  # nobody


def need_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("acting as another user needs root")


@contextlib.contextmanager
def squatter(address: str, uid: int = OTHER_UID) -> Iterator[int]:
    """A child process of user `uid` holding the abstract socket `address` that
    answers one connection with a fake sync reply; yields a pipe fd on which it
    writes what it received (b"" when the client sent nothing), then exits."""
    ready_r, ready_w = os.pipe()
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os and socket calls, then _exit
        code = 1
        try:
            os.close(ready_r)
            os.close(got_r)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.bind(sockaddr(address))
                s.listen(1)
                os.write(ready_w, b"ready")
                conn, _ = s.accept()
                data = b""
                with conn, contextlib.suppress(OSError):  # the client may be gone already
                    conn.settimeout(30)
                    conn.sendall(json.dumps({"results": [{"collection": "ds", "line": "ds:v99"}]}).encode() + b"\n")
                    while chunk := conn.recv(65536):
                        data += chunk
                os.write(got_w, data or b"-")
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(got_w)
    try:
        assert os.read(ready_r, 5) == b"ready", "the squatting child could not bind its socket"
        yield got_r
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(got_r)


def test_an_abstract_control_name_taken_by_another_user(tmp_path):
    """A state path too long for a socket path gives an abstract socket.  Its name
    used to be predictable (@artifactfs-<uid>-<hash of the mountpoint>): another
    user bound it first and the mount failed with EADDRINUSE, and `sync` would have
    believed whoever answered there.  Now the name is random, and the client talks
    only to a socket held by its own user or root."""
    need_root()
    store = str(tmp_path / "store")
    publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", {"a.txt": b"a"})
    state = tmp_path / ("s" * 100)  # state dir path > 107 bytes: no socket path fits
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    old_name = f"@artifactfs-{os.getuid()}-" + xxhash.xxh3_64_hexdigest(f"{host_key()}\0{mnt.resolve()}".encode())
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    with squatter(old_name) as got:
        with mounted(store, mnt, env=env) as m:
            address = os.getxattr(m.path, "user.artifactfs.control").decode()
            assert address.startswith("@") and address != old_name
            with open(m.p("ds", "draft", "b.txt"), "wb") as f:
                f.write(b"b")
            done = cli("sync", m.path, env=env, timeout=120)
            assert (done.returncode, done.stdout) == (0, "ds:v1\n"), done.stderr
        with pytest.raises(ArtifactfsError, match=f"held by uid {OTHER_UID}"):
            request(old_name, {"op": "sync", "collections": ["ds"], "metadata": {"secret": "s"}})
        assert os.read(got, 65536) == b"-"  # it got nothing
    assert Registry.open(store).versions("proj", "ds") == [0, 1]


def _shared_dir(path) -> str:
    path.mkdir()
    os.chmod(path, 0o1777)  # like /tmp
    return str(path)


def _planted(tmp_path) -> tuple[str, dict]:
    """A sticky, world-writable dir in which another user planted the cache's own
    names as symlinks into a victim dir; returns (cache dir, victim paths)."""
    victim = tmp_path / "victim"
    (victim / "blobs").mkdir(parents=True)
    (victim / "size").write_text("precious")
    cache = _shared_dir(tmp_path / "shared")
    for name, target in (("size", victim / "size"), ("lock", victim / "made-through-lock"),
                         ("blobs", victim / "blobs")):
        os.symlink(target, os.path.join(cache, name))
        if os.geteuid() == 0:
            os.lchown(os.path.join(cache, name), OTHER_UID, OTHER_UID)
    return cache, {"victim": victim}


def _private_with(tmp_path, name: str) -> str:
    """A private cache dir of this user holding a symlink `name` to outside."""
    cache = tmp_path / "own"
    cache.mkdir(mode=0o700)
    (tmp_path / "outside").mkdir(exist_ok=True)
    os.symlink(tmp_path / "outside" / name, cache / name)
    return str(cache)


def _others(tmp_path) -> str:
    need_root()
    cache = tmp_path / "others"
    cache.mkdir(mode=0o700)
    os.chown(cache, OTHER_UID, OTHER_UID)
    return str(cache)


@pytest.mark.parametrize("case, why", [
    ("shared", "is writable by other users (mode 1777)"),
    ("planted", "is writable by other users (mode 1777)"),
    ("others", f"is owned by uid {OTHER_UID}"),
    ("own-lock", "lock is a symbolic link"),
    ("own-blobs", "blobs is a symbolic link"),
])
def test_a_cache_dir_others_can_write_to_is_refused(s3_url, tmp_path, case, why):
    """--cache-dir in a shared place (a 1777 dir with the cache's names planted as
    symlinks by another user), a dir of another user, or symlinks in place of the
    cache's own files: one line, exit 1, and nothing written through the links
    (the root daemon used to create files through `lock` and blobs through `blobs`)."""
    publish(Registry.open(s3_url, create=True), str(tmp_path / "pub"), "ds", {"a.txt": b"a"})
    victim = tmp_path / "victim"
    cache = {"shared": lambda: _shared_dir(tmp_path / "shared"), "planted": lambda: _planted(tmp_path)[0],
             "others": lambda: _others(tmp_path), "own-lock": lambda: _private_with(tmp_path, "lock"),
             "own-blobs": lambda: _private_with(tmp_path, "blobs")}[case]()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = cli("--store", s3_url, "--project", "proj", "mount", str(mnt), "--cache-dir", cache,
               env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}, timeout=120)
    if done.returncode == 0:
        with contextlib.suppress(OSError):
            open(mnt / "ds" / "ds:v0" / "a.txt", "rb").read()  # what the old daemon did: cache a blob
        cli("umount", str(mnt), env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}, timeout=60)
    if case == "planted":
        assert (victim / "size").read_text() == "precious"
        assert not (victim / "made-through-lock").exists()
        assert os.listdir(victim / "blobs") == []
    assert not (tmp_path / "outside" / "lock").exists()
    assert done.returncode == 1, done.stdout
    assert why in done.stderr and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
