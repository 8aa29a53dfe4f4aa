"""An S3 service that fails: throttling and 5xx are retried a bounded number of
times; denied access, unknown buckets and bad credentials are one line naming the
bucket; a service that ignores conditional writes is refused before anything is
written; and a paused (SIGSTOP) or unreachable server never hangs a reader of the
mount or a commit: EIO within the configured timeout, then recovery by itself.

Servers: a moto process per test where it gets paused (tests/s3server.py), and
tests/s3proxy.py, a real HTTP proxy in front of moto, for what moto cannot do."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import randbytes
from mountutil import cli, gone, mounted, wait_for
from s3proxy import SECRET, S3Proxy, proxy  # noqa: F401 (fixture)
from s3server import MotoServer, moto_server, s3_server, s3_url  # noqa: F401 (fixtures)
from test_mount_read import commit

from artifactfs.errors import StoreError
from artifactfs.registry.versions import Registry
from artifactfs.store import open_store

TIMEOUT = 6.0  # $ARTIFACTFS_S3_TIMEOUT for these tests: one request, retries included
def _objects(server: MotoServer, url: str) -> list[str]:
    bucket = url[len("s3://"):].split("/")[0]
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_throttling_and_5xx_are_retried_a_bounded_number_of_times(proxy, s3_server) -> None:
    url = s3_server.new_bucket_url()
    store = open_store(url)
    store.put_if_absent("k", b"value")
    proxy.requests.clear()
    proxy.fail_next = 2              # two 503 SlowDown answers, then the real one
    assert store.get("k") == b"value"
    assert proxy.requests["GET"] == 3
    proxy.requests.clear()
    proxy.fail_next = 100            # it keeps failing: give up after 3 attempts
    with pytest.raises(StoreError, match=r"failed at http://127\.0\.0\.1:\d+ after retries: SlowDown") as e:
        store.get("k")
    assert proxy.requests["GET"] == 3 and "\n" not in str(e.value)


@pytest.mark.parametrize("mode,message", [
    ("deny", "access to S3 bucket '{bucket}' at http://127.0.0.1:{port} denied (AccessDenied)"),
    ("bad-credentials", "http://127.0.0.1:{port} rejected the AWS credentials for bucket '{bucket}' "
                        "(InvalidAccessKeyId)"),
])
def test_denied_and_bad_credentials_are_one_line_naming_the_bucket(proxy, s3_server, tmp_path, mode,
                                                                   message) -> None:
    url = s3_server.new_bucket_url()
    bucket = url[len("s3://"):]
    proxy.mode = mode
    expected = message.format(bucket=bucket, port=proxy.endpoint.rsplit(":", 1)[1])
    with pytest.raises(StoreError) as e:
        Registry.open(url, create=True)
    assert str(e.value).startswith(expected) and SECRET not in str(e.value)
    (tmp_path / "f").write_text("x")
    done = cli("--store", url, "put", str(tmp_path), "ds", "--type", "dataset", env=dict(os.environ))
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: {expected}") and len(done.stderr.splitlines()) == 1
    assert SECRET not in done.stderr + done.stdout


def test_missing_bucket_names_it(proxy) -> None:
    done = cli("--store", "s3://no-such-bucket-here/p", "ls", env=dict(os.environ))
    assert done.returncode == 1
    assert done.stderr.startswith("Error: S3 bucket 'no-such-bucket-here' does not exist at http://127.0.0.1:")


def test_a_service_ignoring_conditional_writes_is_refused_before_writing(proxy, s3_server, tmp_path) -> None:
    url = s3_server.new_bucket_url()
    proxy.mode = "strip-conditional"
    with pytest.raises(StoreError, match=r"does not honour conditional writes \(If-None-Match: \* was ignored\)"):
        Registry.open(url, create=True)
    assert _objects(s3_server, url) == []   # not even the store marker; the probe is removed
    (tmp_path / "f").write_text("x")
    done = cli("--store", url, "put", str(tmp_path), "ds", "--type", "dataset", env=dict(os.environ))
    assert done.returncode == 1 and "does not honour conditional writes" in done.stderr
    assert _objects(s3_server, url) == []
    proxy.mode = "pass"                     # an honest service: the same put works
    cli("--store", url, "put", str(tmp_path), "ds", "--type", "dataset", env=dict(os.environ), check=True)
    assert any(k.startswith("projects/") for k in _objects(s3_server, url))
    assert not [k for k in _objects(s3_server, url) if "probe" in k]


@pytest.fixture
def paused_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto server of this test's own (it gets paused), never left stopped."""
    with moto_server(set_env=False) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("ARTIFACTFS_S3_TIMEOUT", str(TIMEOUT))
        try:
            yield server
        finally:
            os.kill(server.process.pid, signal.SIGCONT)


def _timed(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(list(argv), capture_output=True, timeout=10 * TIMEOUT)
    return done, time.monotonic() - start


def test_paused_server_gives_eio_in_time_then_recovers(paused_server, tmp_path) -> None:
    url = paused_server.new_bucket_url()
    Registry.open(url, create=True)
    big = randbytes(20 * 1024 * 1024)
    commit(url, "ds", str(tmp_path / "src"), {"a.txt": b"alive\n"})
    commit(url, "ds", str(tmp_path / "src"), {"b.txt": b"bee\n", "big.bin": big})
    with mounted(url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        assert open(m.p("ds", "ds:v0", "a.txt"), "rb").read() == b"alive\n"
        daemon = m.pid
        os.kill(paused_server.process.pid, signal.SIGSTOP)
        # a file of a version not read before (the lookup needs the store), and a big file
        for path in (m.p("ds", "ds:v1", "b.txt"), m.p("ds", "ds:v1", "big.bin")):
            done, took = _timed("cat", path)
            assert done.returncode != 0 and b"Input/output error" in done.stderr, done.stderr
            assert took < 2.5 * TIMEOUT, f"{path}: {took:.1f} s"
        # a reader blocked on the store can be killed: it ends within the timeout
        reader = subprocess.Popen(["sha256sum", m.p("ds", "ds:v1", "big.bin")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        reader.kill()
        wait_for(lambda: reader.poll() is not None, 2.5 * TIMEOUT, "the killed reader to end")
        assert not gone(daemon)
        assert "cannot reach S3 endpoint" in m.log and "Traceback" not in m.log
        os.kill(paused_server.process.pid, signal.SIGCONT)
        # the same reads, no remount
        assert open(m.p("ds", "ds:v1", "b.txt"), "rb").read() == b"bee\n"
        assert open(m.p("ds", "ds:v1", "big.bin"), "rb").read() == big
        assert m.pid == daemon


def test_paused_server_during_sync_leaves_no_version_then_the_same_sync_succeeds(paused_server, tmp_path) -> None:
    url = paused_server.new_bucket_url()
    Registry.open(url, create=True)
    commit(url, "ds", str(tmp_path / "src"), {"a.txt": b"v0\n"})
    new = {f"new/{i}.bin": randbytes(100_000 + i) for i in range(20)}
    with mounted(url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        draft = m.p("ds", "draft")
        with open(os.path.join(draft, "first.txt"), "wb") as f:  # a first commit: the store is in use
            f.write(b"first\n")
        assert cli("sync", draft, env=m.env, timeout=10 * TIMEOUT, check=True).stdout == "ds:v1\n"
        for path, data in new.items():
            os.makedirs(os.path.dirname(os.path.join(draft, path)), exist_ok=True)
            with open(os.path.join(draft, path), "wb") as f:
                f.write(data)
        os.kill(paused_server.process.pid, signal.SIGSTOP)
        start = time.monotonic()
        done = cli("sync", draft, env=m.env, timeout=10 * TIMEOUT)
        took = time.monotonic() - start
        assert done.returncode != 0 and "cannot reach S3 endpoint" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert took < 4 * TIMEOUT, f"sync took {took:.1f} s"
        os.kill(paused_server.process.pid, signal.SIGCONT)
        assert Registry.open(url).versions("proj", "ds") == [0, 1]   # no partial version
        assert sorted(os.listdir(os.path.join(draft, "new"))) == sorted(p.split("/")[1] for p in new)
        done = cli("sync", draft, env=m.env, timeout=10 * TIMEOUT, check=True)
        assert done.stdout == "ds:v2\n"
        for path, data in new.items():
            assert open(m.p("ds", "ds:v2", path), "rb").read() == data


def test_service_stalling_at_the_version_record_leaves_no_version(proxy, s3_server, tmp_path,
                                                                  monkeypatch) -> None:
    """The stall comes exactly when the version record is written: the commit
    fails within the timeout, nothing names the uploaded blobs, and the same
    save succeeds once the service answers."""
    monkeypatch.setenv("ARTIFACTFS_S3_TIMEOUT", str(TIMEOUT))
    url = s3_server.new_bucket_url()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.txt").write_text(f"file {i}\n")
    proxy.hang_on = ("PUT", "/versions/v0.json")
    start = time.monotonic()
    done = cli("--store", url, "--project", "proj", "put", str(src), "ds", "--type", "dataset", env=dict(os.environ),
               timeout=10 * TIMEOUT)
    assert done.returncode == 1 and "cannot reach S3 endpoint" in done.stderr, done.stderr
    assert time.monotonic() - start < 4 * TIMEOUT
    assert not [k for k in _objects(s3_server, url) if "/versions/" in k]
    proxy.mode = "pass"
    done = cli("--store", url, "--project", "proj", "put", str(src), "ds", "--type", "dataset", env=dict(os.environ), check=True)
    assert Registry.open(url).versions("proj", "ds") == [0]


def test_endpoint_from_the_command_line_or_aws_endpoint_url(s3_server, tmp_path, monkeypatch) -> None:
    """--endpoint-url and AWS_ENDPOINT_URL both reach the store (path-style addressing
    by default with an endpoint); credentials come from the AWS environment."""
    url = s3_server.new_bucket_url()
    env = {k: v for k, v in os.environ.items() if k not in ("ARTIFACTFS_S3_ENDPOINT", "AWS_ENDPOINT_URL")}
    env.update({k: v for k, v in s3_server.env.items() if k != "ARTIFACTFS_S3_ENDPOINT"})
    (tmp_path / "f.txt").write_text("x")
    cli("--endpoint-url", s3_server.endpoint, "--store", url, "put", str(tmp_path), "ds", "--type", "dataset",
        env=env, check=True)
    done = cli("--store", url, "ls", env={**env, "AWS_ENDPOINT_URL": s3_server.endpoint}, check=True)
    assert "ds" in done.stdout


def test_stopped_service_gives_eio_at_once_then_the_same_read_works(proxy, s3_server, tmp_path,
                                                                     monkeypatch) -> None:
    """The service stops listening (connections refused) and comes back on the same
    address with its data: a read in between fails fast with EIO, the daemon stays,
    and the same read works afterwards without a remount."""
    monkeypatch.setenv("ARTIFACTFS_S3_TIMEOUT", str(TIMEOUT))
    url = s3_server.new_bucket_url()
    Registry.open(url, create=True)
    commit(url, "ds", str(tmp_path / "src"), {"a.txt": b"one\n"})
    commit(url, "ds", str(tmp_path / "src"), {"b.txt": b"two\n"})
    with mounted(url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        assert open(m.p("ds", "ds:v0", "a.txt"), "rb").read() == b"one\n"
        daemon = m.pid
        proxy.stop()
        done, took = _timed("cat", m.p("ds", "ds:v1", "b.txt"))
        assert done.returncode != 0 and b"Input/output error" in done.stderr, done.stderr
        assert took < 2.5 * TIMEOUT
        proxy.start()
        assert open(m.p("ds", "ds:v1", "b.txt"), "rb").read() == b"two\n"
        assert m.pid == daemon and not gone(daemon)
