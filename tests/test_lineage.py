"""Lineage through the Python API and the CLI: logged_by(), used_by(), history_step."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from core_util import write_files

import artifactfs
from artifactfs import Api, Artifact


def run_py(code: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_logged_by_holds_the_run_record(env, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "1"})
    run_py(f"import artifactfs as a; x = a.Artifact('m', 'model'); x.add_dir({src!r}); x.save()",
           WANDB_RUN_ID="wb-123", SLURM_JOB_ID="777", ARTIFACTFS_STEP="42")
    art = Api().artifact("m:v0")
    run = art.logged_by()
    assert run.run_ids == {"WANDB_RUN_ID": "wb-123", "SLURM_JOB_ID": "777"}
    assert run.host == socket.gethostname() and run.cwd == os.getcwd()
    assert run.command[0] == sys.executable and "-c" in run.command
    assert run.started_at and run.pid > 0 and run.user
    assert art.history_step == 42


def test_run_id_and_step_from_the_api(env, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTFS_RUN_ID", "my-run")
    artifactfs.set_step(7)
    try:
        art = Artifact("m", "model")
        art.add_dir(write_files(str(tmp_path / "src"), {"a": "1"}))
        art.save()
    finally:
        artifactfs.set_step(None)
    assert art.logged_by().id == "my-run" and art.history_step == 7
    art2 = Artifact("n", "model")
    art2.add_dir(write_files(str(tmp_path / "src2"), {"b": "1"}))
    art2.save()
    assert art2.history_step is None


def test_used_by_records_each_using_process_once(env, tmp_path):
    art = Artifact("m", "model")
    art.add_dir(write_files(str(tmp_path / "src"), {"a": "1"}))
    art.save()
    art.link("prod")
    code = ("import artifactfs as a; x = a.Api().artifact('prod:v0'); x.download({d!r}); x.download({d!r})")
    run_py(code.format(d=str(tmp_path / "d1")), ARTIFACTFS_RUN_ID="reader-1")
    run_py(code.format(d=str(tmp_path / "d2")), MLFLOW_RUN_ID="ml-9")
    uses = Api().artifact("m:v0").used_by()  # a link's uses count for its source
    assert [u.run.run_ids for u in uses] == [{"ARTIFACTFS_RUN_ID": "reader-1"}, {"MLFLOW_RUN_ID": "ml-9"}]
    assert uses[0].run.id == "reader-1" and {u.via for u in uses} == {"api"}


def test_lineage_cli(env, tmp_path):
    from mountutil import cli
    src = write_files(str(tmp_path / "src"), {"a": "1"})
    cli("put", src, "m", "--type", "model", env={**os.environ, "ARTIFACTFS_RUN_ID": "producer"})
    cli("get", "m:v0", str(tmp_path / "out"), env={**os.environ, "ARTIFACTFS_RUN_ID": "consumer"})
    d = json.loads(cli("lineage", "m:v0", "--json").stdout)
    assert d["logged_by"]["id"] == "producer"
    assert [u["run"]["id"] for u in d["used_by"]] == ["consumer"]
    text = cli("lineage", "m:v0").stdout
    assert "producer" in text and "consumer" in text


def test_an_entry_download_and_get_record_a_use(env, tmp_path):
    from artifactfs.registry.runinfo import current_run
    art = Artifact("m", "model")
    art.add_dir(write_files(str(tmp_path / "src"), {"a": "1"}))
    art.add({"k": 1}, "cfg")
    art.save()
    Api().artifact("m:v0").get_entry("a").download(str(tmp_path / "one"))
    assert [u.run.id for u in art.used_by()] == [current_run().id]
    art2 = Artifact("n", "model")
    art2.add({"k": 2}, "cfg")
    art2.save()
    assert Api().artifact("n:v0").get("cfg") == {"k": 2}
    assert [u.via for u in art2.used_by()] == ["api"]
