"""draft/ folders while the store is unreachable (a real S3 server process killed
under a mount): collection folders stay listable with their draft/, the draft is
listable and writable from staging and what was seen, and what truly needs the
store (sync) fails for that operation only, with one clear line and a log line;
the draft is kept."""
from __future__ import annotations

import os
import time

from mountutil import cli, mounted
from s3server import moto_server
from test_mount_read import commit

from artifactfs.registry.versions import Registry


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_drafts_degrade_while_the_store_is_unreachable(tmp_path, monkeypatch):
    with moto_server(set_env=False) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        url = server.new_bucket_url()
        Registry.open(url, create=True)
        commit(url, "ds", str(tmp_path / "src"), {"a.txt": b"alive\n", "sub/b.txt": b"b"})
        commit(url, "other", str(tmp_path / "src"), {"o.txt": b"o"})
        commit(url, "third", str(tmp_path / "src"), {"t.txt": b"t"})
        with mounted(url, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--refresh", "0.2") as m:
            d = m.p("ds", "draft")
            listed = set(os.listdir(m.p("ds")))
            assert "draft" in listed
            assert sorted(os.listdir(d)) == ["a.txt", "sub"]
            with open(f"{d}/before.txt", "wb") as f:
                f.write(b"written while reachable")
            assert "draft" in os.listdir(m.p("other"))       # its draft opened on v0
            assert sorted(os.listdir(m.p("other", "other:v0"))) == ["o.txt"]
            commit(url, "other", str(tmp_path / "src"), {"o2.txt": b"o2"})  # another writer
            time.sleep(0.5)
            os.stat(m.p("other", "other:v1"))                 # seen: its record, not its tree
            other = set(os.listdir(m.p("third")))             # listed; its draft never opened
            assert "draft" in other
            server.process.kill()
            server.process.wait()
            time.sleep(0.5)
            if os.geteuid() == 0:  # the kernel forgets every node: the daemon rebuilds them
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("2")
            start = time.monotonic()
            assert set(os.listdir(m.p("ds"))) == listed
            # the untouched draft cannot move to other:v1 (its tree was never read): it stays, logged
            assert "draft" in os.listdir(m.p("other"))
            assert sorted(os.listdir(m.p("other", "draft"))) == ["o.txt"]
            assert "the draft of other stays on v0 for now" in m.log
            assert set(os.listdir(m.p("third"))) == other
            assert sorted(os.listdir(d)) == ["a.txt", "before.txt", "sub"]
            with open(f"{d}/during.txt", "wb") as f:     # staging needs no store
                f.write(b"written while unreachable")
            os.mkdir(f"{d}/newdir")
            os.rename(f"{d}/during.txt", f"{d}/newdir/during.txt")
            assert _read(f"{d}/newdir/during.txt") == b"written while unreachable"
            assert _read(f"{d}/before.txt") == b"written while reachable"
            done = cli("sync", d, env=m.env, timeout=120)  # needs the store: fails, one line
            assert done.returncode == 1
            assert done.stderr.startswith("Error: ds") and len(done.stderr.strip().splitlines()) == 1
            assert sorted(os.listdir(d)) == ["a.txt", "before.txt", "newdir", "sub"]  # kept
            assert time.monotonic() - start < 90
            assert "refresh failed" in m.log
            assert "sync of ds failed" in m.log
