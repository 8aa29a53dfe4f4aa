"""The link, unlink, delete, ttl and gc commands."""
from __future__ import annotations

import json
import os

from artifactfs import Api
from core_util import write_files
from mountutil import cli


def ok(*args: str) -> str:
    done = cli(*args, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return done.stdout


def fails(*args: str) -> str:
    done = cli(*args, env=dict(os.environ))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_link_unlink_delete_ttl_gc(env, tmp_path):
    ok("put", write_files(str(tmp_path / "a"), {"w": "0"}), "m", "--type", "model", "--alias", "best")
    ok("put", write_files(str(tmp_path / "b"), {"w": "1"}), "m", "--type", "model")
    assert ok("link", "m:v1", "model-registry/clf", "--alias", "prod").strip() == "model-registry/clf:v0 -> proj/m:v1"
    assert ok("link", "m:v0", "prod").strip() == "proj/prod:v0 -> proj/m:v0"
    assert Api().artifact("model-registry/clf:prod").source_name == "m:v1"
    shown = json.loads(ok("--project", "model-registry", "info", "clf:prod", "--json"))
    assert shown["link"] == "proj/m:v1" and shown["logged_by"] == Api().artifact("m:v1").logged_by().id
    ok("unlink", "model-registry/clf:v0")
    assert "not a link" in fails("unlink", "m:v0")
    refused = fails("delete", "m:v0")
    assert "has aliases best; pass --delete-aliases to remove them too" in refused and "=True" not in refused
    ok("delete", "m:v0", "--delete-aliases")
    assert "deleted" in fails("info", "m:v0")
    assert "was deleted" in fails("info", "prod:v0")  # the source's links go with it
    ok("ttl", "m:v1", "30d")
    assert Api().artifact("m:v1").ttl.days == 30
    ok("ttl", "m:v1", "none")
    assert Api().artifact("m:v1").ttl is None
    ok("ttl", "--default", "90d")
    ok("ttl", "m:v1", "inherit")
    assert Api().artifact("m:v1").ttl.days == 90
    assert "default TTL 90d" in ok("ttl", "--default", "90d")
    assert "invalid duration" in fails("ttl", "m:v1", "soon")
    assert "name a version" in fails("delete", "m")
    dry = json.loads(ok("gc", "--dry-run", "--grace", "0", "--keep-deleted", "0", "--json"))
    assert dry["dry_run"] and dry["blobs"] == 1 and dry["trees"] >= 1
    assert "freed 1 blobs" in ok("gc", "--grace", "0", "--keep-deleted", "0")
    assert "freed 0 blobs" in ok("gc", "--grace", "0", "--keep-deleted", "0")
    assert ok("get", "m:v1", str(tmp_path / "out"))  == "" and open(tmp_path / "out" / "w").read() == "1"


def test_zero_durations_where_zero_makes_sense(env, tmp_path):
    ok("put", write_files(str(tmp_path / "a"), {"w": "0"}), "m", "--type", "model")
    for zero in ("0", "0s", "0h", "0d"):
        assert "freed 0 blobs" in ok("gc", "--grace", zero, "--keep-deleted", zero)
    assert "invalid duration 'none'" in fails("gc", "--grace", "none")
    for ttl in ("0s", "0d"):
        assert f"invalid duration '{ttl}' (it must be positive)" in fails("ttl", "m:v0", ttl)
        assert "must be positive" in fails("ttl", "--default", ttl)
    assert "invalid duration '0'" in fails("ttl", "m:v0", "0")
