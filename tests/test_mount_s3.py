"""The mount over a remote (S3, a real moto server) store: contents go through
the shared on-disk cache, which --cache-size caps with LRU eviction, and a file
shared by two versions is fetched once."""
from __future__ import annotations

import hashlib
import os
import time

import pytest
from conftest import randbytes
from mountutil import cli, mounted
from s3server import moto_server, s3_server, s3_url  # noqa: F401 (fixtures)
from test_mount_read import commit

from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_cache_eviction_under_cache_size_and_shared_chunks(s3_url, tmp_path):
    Registry.open(s3_url, create=True)
    big = randbytes(4 * CHUNK_SIZE)
    small = {f"s{i}.bin": randbytes(300_000) for i in range(4)}
    commit(s3_url, "ds", str(tmp_path / "src"), {"big.bin": big, **small})
    commit(s3_url, "ds", str(tmp_path / "src"), {"big.bin": big, "other.txt": b"v1"})
    cache = tmp_path / "cache"
    cap = 2 * CHUNK_SIZE + 1_000_000
    with mounted(s3_url, tmp_path / "mnt", "--cache-dir", str(cache), "--cache-size", str(cap),
                 "--memory", "32M") as m:
        with open(m.p("ds", "ds:v0", "big.bin"), "rb") as f:  # 4 KiB of a 32 MiB file: one chunk
            assert f.read(4096) == big[:4096]
        assert m.stats()["bytes_fetched"] == CHUNK_SIZE
        for name, content in small.items():
            assert _read(m.p("ds", "ds:v0", name)) == content
        assert hashlib.sha256(_read(m.p("ds", "ds:v0", "big.bin"))).digest() == hashlib.sha256(big).digest()
        s = m.stats()
        assert s["bytes_fetched"] == len(big) + sum(map(len, small.values()))
        assert s["evictions"] > 0
        assert s["cache_bytes"] <= cap
        on_disk = sum(f.stat().st_size for f in (cache / "blobs").rglob("*") if f.is_file())
        assert on_disk <= cap
        # the same bytes in v1: served again, correct, refetched only where evicted
        assert _read(m.p("ds", "ds:v1", "big.bin")) == big
        s2 = m.stats()
        assert s2["bytes_fetched"] - s["bytes_fetched"] < len(big)
        assert s2["cache_bytes"] <= cap


def test_listings_survive_an_unreachable_store(tmp_path, monkeypatch):
    """The store goes away while mounted: folders keep showing what was last seen
    (and the log says why), and file contents already cached stay readable."""
    with moto_server(set_env=False) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        url = server.new_bucket_url()
        Registry.open(url, create=True)
        commit(url, "ds", str(tmp_path / "src"), {"a.txt": b"alive\n"})
        # --read-only: this is about the read-only layer (draft/ folders have their own rules)
        with mounted(url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--refresh", "0.2",
                     "--read-only") as m:
            listed = set(os.listdir(m.p("ds")))
            assert _read(m.p("ds", "ds:v0", "a.txt")) == b"alive\n"
            server.process.kill()
            server.process.wait()
            time.sleep(0.5)
            if os.geteuid() == 0:  # make the kernel forget every node: the daemon must rebuild them
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("2")
            start = time.monotonic()
            assert set(os.listdir(m.p("ds"))) == listed
            assert sorted(os.listdir(m.path)) == ["ds"]
            assert _read(m.p("ds", "ds:v0", "a.txt")) == b"alive\n"
            assert time.monotonic() - start < 60
            assert "refresh failed" in m.log


def test_debug_log_holds_no_credentials(tmp_path):
    """--debug logs our own debug lines, but never botocore's and urllib3's, which
    print each request's headers: the session token and the Authorization header
    would land in the log file (and, with --foreground under systemd, the journal)."""
    token = "SESSIONTOKEN" + randbytes(12).hex()
    with moto_server(set_env=False) as server:
        env = {**os.environ, **server.env, "AWS_SESSION_TOKEN": token}
        url = server.new_bucket_url()
        with mounted(url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--debug", env=env) as m:
            os.makedirs(m.p("ds", "draft"), exist_ok=True)
            with open(m.p("ds", "draft", "a.txt"), "wb") as f:
                f.write(b"secret-free\n")
            os.setxattr(m.p("ds", "draft"), "user.artifact.metadata", b'{"api_key": "' + token.encode() + b'"}')
            with pytest.raises(OSError):  # a name that is not UTF-8: refused, and logged without a logging error
                os.close(os.open(os.path.join(os.fsencode(m.p("ds", "draft")), b"bad\xffname"), os.O_CREAT, 0o644))
            assert cli("sync", m.path, env=env).returncode == 0
            assert _read(m.p("ds", "ds:v0", "a.txt")) == b"secret-free\n"
            log = m.log
    assert token not in log
    assert "authorization" not in log.lower()
    assert "x-amz-security-token" not in log.lower()
    assert " DEBUG artifactfs" in log  # --debug still does something:
    assert " DEBUG artifactfs.requests: mkdir(" in log and " DEBUG artifactfs.store: S3 put " in log
    assert " DEBUG pyfuse3" not in log  # (its worker threads starting and stopping: noise)
    assert "setxattr(" in log and "Logging error" not in log
