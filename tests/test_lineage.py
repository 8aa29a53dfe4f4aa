"""Lineage through the Python API and the CLI: logged_by(), used_by(), history_step."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest
from core_util import write_files
from mountutil import cli, mount_factory, need_fuse  # noqa: F401 (fixture)
from s3proxy import proxy  # noqa: F401 (fixture)
from s3server import s3_server  # noqa: F401 (fixture)

import artifactfs
from artifactfs import Api, Artifact


SECRET = "hunter2-7f3a9c"


def run_py(code: str, *args: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def stored_bytes(store: str) -> bytes:
    """Every object of a local store, concatenated."""
    out = b""
    for dirpath, _, names in os.walk(store):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out += f.read()
    return out


def test_logged_by_holds_the_run_record(env, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "1"})
    run_py(f"import artifactfs as a; x = a.Artifact('m', 'model'); x.add_dir({src!r}); x.save()",
           f"--password={SECRET}", WANDB_RUN_ID="wb-123", SLURM_JOB_ID="777", ARTIFACTFS_STEP="42")
    art = Api().artifact("m:v0")
    run = art.logged_by()
    assert run.run_ids == {"WANDB_RUN_ID": "wb-123", "SLURM_JOB_ID": "777"}
    assert run.host == socket.gethostname()
    assert run.program == f"{os.path.basename(sys.executable)} -c"  # not the code, not the arguments
    assert run.started_at and run.pid > 0 and run.user
    assert art.history_step == 42
    assert set(run.to_json()) == {"id", "program", "user", "host", "started_at", "pid", "run_ids", "step"}
    assert SECRET.encode() not in stored_bytes(env)


def test_a_script_is_named_and_its_arguments_are_not_stored(env, tmp_path):
    """Command lines hold secrets (--password=..., --hf-token=...), and the store is
    shared: a run record keeps the script's name, never an argument or the cwd."""
    art = Artifact("m", "model")
    art.add_dir(write_files(str(tmp_path / "src"), {"a": "1"}))
    art.save()
    script = tmp_path / "train.py"
    script.write_text("import sys, artifactfs as a; a.Api().artifact('m:v0').download(sys.argv[1])\n")
    subprocess.run([sys.executable, "-u", str(script), str(tmp_path / "out"), f"--hf-token={SECRET}"], check=True,
                   env=os.environ, cwd=str(tmp_path), timeout=120)
    (use,) = Api().artifact("m:v0").used_by()
    assert use.run.program == "train.py"
    assert SECRET.encode() not in stored_bytes(env) and str(tmp_path).encode() not in stored_bytes(env)


def test_records_of_older_versions_show_no_arguments(env, tmp_path):
    """Records written before: the command line and cwd stay in the store, but
    lineage shows only the program's name."""
    from mountutil import cli
    art = Artifact("m", "model")
    art.add_dir(write_files(str(tmp_path / "src"), {"a": "1"}))
    art.save()
    old = {"id": "old-run", "command": ["/usr/bin/python3", "train.py", f"--password={SECRET}"], "user": "ann",
           "host": "gpu3", "cwd": "/home/ann/exp", "started_at": "2026-01-01T00:00:00+00:00", "pid": 42,
           "run_ids": {}, "step": None}
    use = {"run": old, "at": "2026-01-01T00:00:01+00:00", "via": "mount", "path": "a"}
    uses = os.path.join(env, "projects", "proj", "collections", "m", "uses", "v0")
    os.makedirs(uses, exist_ok=True)
    with open(os.path.join(uses, "old-run.json"), "w") as f:
        json.dump(use, f)
    text = cli("lineage", "m:v0").stdout
    assert "old-run" in text and "train.py" in text and SECRET not in text and "/home/ann" not in text
    d = json.loads(cli("lineage", "m:v0", "--json").stdout)
    assert d["used_by"][0]["run"]["program"] == "train.py" and SECRET not in json.dumps(d)


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
    src = write_files(str(tmp_path / SECRET), {"a": "1"})
    cli("put", src, "m", "--type", "model", env={**os.environ, "ARTIFACTFS_RUN_ID": "producer"})
    cli("get", "m:v0", str(tmp_path / "out"), env={**os.environ, "ARTIFACTFS_RUN_ID": "consumer"})
    d = json.loads(cli("lineage", "m:v0", "--json").stdout)
    assert d["logged_by"]["id"] == "producer"
    assert [u["run"]["id"] for u in d["used_by"]] == ["consumer"]
    text = cli("lineage", "m:v0").stdout
    assert "producer" in text and "consumer" in text
    assert d["logged_by"]["program"] == "artifactfs"  # `python -m artifactfs put SRC ...`
    assert SECRET not in text and SECRET.encode() not in stored_bytes(env)


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


@pytest.mark.parametrize("argv, program", [
    (["/usr/bin/cat", "f"], "cat"),
    (["/opt/venv/bin/python3.11", "-u", "-W", "ignore", "/home/ann/train.py", "--password=x"], "train.py"),
    (["python", "-m", "torch.distributed.run", "--nproc-per-node=8", "train.py"], "torch.distributed.run"),
    (["python3", "-c", "import os; os.environ['TOKEN']", "--token=x"], "python3 -c"),
    (["sh", "-c", "echo $SECRET > f"], "sh -c"),
    (["bash", "/opt/run.sh", "secret"], "run.sh"),
    (["ray::Worker --token=x"], "ray::Worker"),  # a title written over argv (setproctitle)
    ([], ""),
])
def test_a_run_record_names_the_program_only(argv, program):
    from artifactfs.registry.runinfo import program_of
    assert program_of(argv) == program


@contextlib.contextmanager
def read_only(path: str):
    """`path` read-only for everyone, root included (a read-only bind mount; tests
    run as root, whom chmod does not stop)."""
    need_fuse()  # mount(8) privileges: where FUSE is usable, so is a bind mount (this machine, CI)
    subprocess.run(["mount", "--bind", path, path], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", path], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=True)


def test_a_read_only_user_gets_and_downloads_with_one_warning(env, tmp_path, mount_factory):
    src = write_files(str(tmp_path / "src"), {"a.txt": "hello", "d/b.bin": "x" * 1000})
    art = Artifact("ds", "dataset")
    art.add_dir(src)
    art.save()
    with read_only(env):
        done = cli("get", "ds:latest", str(tmp_path / "out"))
        assert done.returncode == 0, done.stderr
        assert open(tmp_path / "out" / "d" / "b.bin").read() == "x" * 1000
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "not recorded" in warnings[0] and "Read-only" in warnings[0], done.stderr
        out = run_py(f"import artifactfs as a; print(a.Api().artifact('ds:v0').download({str(tmp_path / 'o2')!r}))")
        assert open(tmp_path / "o2" / "a.txt").read() == "hello" and out.strip() == str(tmp_path / "o2")
        m = mount_factory(env, "--read-only")
        with open(m.p("ds", "ds:v0", "a.txt")) as f:
            assert f.read() == "hello"
        m.umount()
        assert "was not recorded" in m.log or "could not record the use" in m.log
    assert Api().artifact("ds:v0").used_by() == []


def test_a_read_only_s3_user_gets_with_one_warning(proxy, tmp_path):  # noqa: F811
    """S3 credentials allowed GetObject and ListBucket only (the proxy answers
    AccessDenied to every PUT, POST and DELETE)."""
    url = proxy_bucket(proxy)
    src = write_files(str(tmp_path / "src"), {"a.txt": "hello"})
    art = Artifact("ds", "dataset", store=url)
    art.add_dir(src)
    art.save("proj")
    proxy.mode = "read-only"
    done = cli("--store", url, "--project", "proj", "get", "ds:latest", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert open(tmp_path / "out" / "a.txt").read() == "hello"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "not recorded" in warnings[0] and "denied" in warnings[0].lower(), done.stderr
    proxy.mode = "pass"
    assert Api(store=url, project="proj").artifact("ds:v0").used_by() == []


def proxy_bucket(proxy) -> str:
    """A fresh bucket, made through the proxy (which forwards to the moto server)."""
    import uuid

    import boto3
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"
