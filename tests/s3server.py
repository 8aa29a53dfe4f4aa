"""A real S3 endpoint for tests and benchmarks: a `moto.server` process on 127.0.0.1.

In a test module:    from s3server import s3_server, s3_url  # noqa: F401 (fixtures)
                     def test_x(s3_url): store = open_store(s3_url)   # a fresh, empty bucket
Outside pytest:      sys.path.insert(0, "tests"); from s3server import moto_server
                     with moto_server() as srv: url = srv.new_bucket_url()

The server process is started once per test run (fixture `s3_server`); each test
gets its own bucket from `s3_url`.  The environment points boto3 at the server with
dummy credentials (ARTIFACTFS_S3_ENDPOINT, AWS_ACCESS_KEY_ID, ...), so code under
test finds it the same way it would find a real endpoint."""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """Variables that point artifactfs (and any boto3 client) at this server."""
        return {**CREDENTIALS, "ARTIFACTFS_S3_ENDPOINT": self.endpoint}

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket_url(self, prefix: str = "") -> str:
        """Create a fresh bucket; returns its s3:// URL (with `prefix` if given)."""
        bucket = f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=bucket)
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


@contextlib.contextmanager
def moto_server(timeout: float = 30.0, set_env: bool = True) -> Iterator[MotoServer]:
    """Start `python -m moto.server` on a free local port, wait until it answers, and
    stop it on exit.  With set_env, os.environ holds MotoServer.env meanwhile."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = MotoServer(f"http://127.0.0.1:{port}", proc)
    saved = {k: os.environ.get(k) for k in server.env}
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {proc.returncode}")
            try:
                urllib.request.urlopen(server.endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {server.endpoint}") from None
                time.sleep(0.1)
        if set_env:
            os.environ.update(server.env)
        yield server
    finally:
        if set_env:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_shared = contextlib.ExitStack()
_shared_server: MotoServer | None = None


@pytest.fixture(scope="session")
def s3_server() -> MotoServer:
    """One moto server for the whole test run, however many modules import this fixture
    (pytest would give each importing module its own session fixture); stopped at exit."""
    global _shared_server
    from conftest import skip_or_fail  # only under pytest: bench scripts use moto_server()
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        skip_or_fail("moto[server] and boto3 are not installed (pip install -e '.[test]')")
    if _shared_server is None or _shared_server.process.poll() is not None:
        _shared_server = _shared.enter_context(moto_server(set_env=False))
        atexit.register(_shared.close)
    return _shared_server


@pytest.fixture
def s3_url(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """s3:// URL of a fresh, empty bucket on the test run's moto server; the
    environment points artifactfs at it for the duration of the test."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server.new_bucket_url()
