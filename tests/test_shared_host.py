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
                with conn:
                    conn.sendall(json.dumps({"results": [{"collection": "ds", "line": "ds:v99"}]}).encode() + b"\n")
                    conn.settimeout(30)
                    data = b""
                    with contextlib.suppress(OSError):
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
