"""The mount's views of portfolios, model-registry/ and deleted versions, and the
lineage it records by itself for unmodified programs."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from core_util import write_files
from mountutil import cli, mount_factory, wait_for  # noqa: F401  (fixture)

from artifactfs import Api, Artifact
from artifactfs.api.gc import collect
from artifactfs.registry import gcstate
from artifactfs.registry.versions import Registry


@pytest.fixture
def store(env, tmp_path) -> str:
    for n, files in enumerate([{"w": "zero", "sub/x": "x0"}, {"w": "one", "sub/x": "x1"}]):
        art = Artifact("m", "model")
        art.add_dir(write_files(str(tmp_path / f"src{n}"), files))
        art.save()
    return env


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_portfolios_and_model_registry(store, mount_factory):
    api = Api()
    api.artifact("m:v1").link("prod", aliases=["live"])
    api.artifact("m:v0").link("prod")
    api.artifact("m:v0").link("model-registry/classifier", aliases=["staging"])
    m = mount_factory(store, "--refresh", "1")
    assert os.readlink(m.p("prod", "prod:v0")) == "../m/m:v1"
    assert os.readlink(m.p("prod", "prod:v1")) == "../m/m:v0"
    assert os.readlink(m.p("prod", "prod:live")) == "prod:v0"
    assert read(m.p("prod", "prod:live", "w")) == "one"  # through the links to the source's folder
    assert "model-registry" in os.listdir(m.path)
    assert sorted(os.listdir(m.p("model-registry"))) == ["classifier"]
    assert sorted(os.listdir(m.p("model-registry", "classifier"))) == ["classifier:latest", "classifier:staging", "classifier:v0"]
    assert os.readlink(m.p("model-registry", "classifier", "classifier:v0")) == "../../m/m:v0"
    assert read(m.p("model-registry", "classifier", "classifier:staging", "sub", "x")) == "x0"
    api.artifact("prod:v1").delete()  # a link: only the link goes
    wait_for(lambda: "prod:v1" not in os.listdir(m.p("prod")), 30, "the deleted link to leave prod/")
    assert read(m.p("m", "m:v0", "w")) == "zero"


def test_deleted_versions_disappear_and_open_files_keep_reading(store, mount_factory):
    m = mount_factory(store, "--refresh", "1")
    path = m.p("m", "m:v0", "w")
    assert read(path) == "zero" and read(m.p("m", "m@v0", "w")) == "zero"  # the kernel caches both names now
    with open(m.p("m", "m:v0", "sub", "x")) as held:
        Api().artifact("m:v0").delete()
        wait_for(lambda: "m:v0" not in os.listdir(m.p("m")), 30, "m:v0 to leave the listing")
        wait_for(lambda: not os.path.exists(path), 30, "m:v0 to disappear")
        wait_for(lambda: not os.path.exists(m.p("m", "m@v0", "w")), 30, "m@v0 to disappear")
        assert held.read() == "x0"  # an open file keeps reading
    assert sorted(os.listdir(m.p("m"))) == ["draft", "m:latest", "m:v1"]
    assert os.readlink(m.p("m", "m:latest")) == "m:v1"


def test_unmodified_readers_show_up_in_used_by(store, mount_factory, tmp_path):
    m = mount_factory(store, "--refresh", "1")
    reader = tmp_path / "train.py"
    reader.write_text("import sys\nfor p in sys.argv[2:]:\n    open(p).read()\n")
    files = [m.p("m", "m:latest", "w"), m.p("m", "m:latest", "sub", "x")]
    env = {**os.environ, "WANDB_RUN_ID": "wb-42", "ARTIFACTFS_STEP": "3"}
    secret = "--hf-token=hf_7f3a9c"  # command lines hold secrets: the store gets none of them
    subprocess.run([sys.executable, str(reader), secret, *files, *files], check=True, env=env, cwd=str(tmp_path))
    subprocess.run(["cat", m.p("m", "m:v0", "w")], check=True, capture_output=True)

    def uses(n: int) -> list:
        return Api().artifact(f"m:v{n}").used_by()
    wait_for(lambda: len(uses(1)) == 1 and len(uses(0)) == 1, 60, "the mount to record both uses")
    (py,), (cat,) = uses(1), uses(0)  # one use per process and version, however many reads
    assert py.via == "mount" and py.run.run_ids == {"WANDB_RUN_ID": "wb-42"} and py.run.step == 3
    assert py.run.program == "train.py" and py.path == "w"
    assert cat.run.program == "cat"
    for dirpath, _, names in os.walk(os.path.join(store, "projects")):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                data = f.read()
            assert b"hf_7f3a9c" not in data and str(tmp_path).encode() not in data  # no argument, no cwd


def test_a_sync_records_the_draft_writer_as_producer(store, mount_factory, tmp_path):
    m = mount_factory(store, "--refresh", "1")
    env = {**os.environ, "ARTIFACTFS_RUN_ID": "writer-7"}
    subprocess.run(["sh", "-c", f"echo new > {m.p('m', 'draft', 'added.txt')}"], check=True, env=env)
    done = cli("sync", m.p("m", "draft"), env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr
    art = Api().artifact("m:v2")
    assert art.logged_by().id == "writer-7" and art.logged_by().program == "sh -c"


def test_a_writer_that_only_appends_to_a_file_of_the_base_is_the_producer(store, mount_factory):
    """Drafts' OPENs reach Python (by default), so a writer that neither creates
    nor truncates a file is seen too (with --no-opens it would not be)."""
    m = mount_factory(store, "--refresh", "1")
    env = {**os.environ, "ARTIFACTFS_RUN_ID": "appender-3"}
    subprocess.run(["sh", "-c", f"echo more >> {m.p('m', 'draft', 'w')}"], check=True, env=env)
    done = cli("sync", m.p("m", "draft"), env=m.env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Api().artifact("m:v2").logged_by().id == "appender-3"


def test_a_draft_keeps_reading_its_deleted_base_after_gc(store, mount_factory):
    m = mount_factory(store, "--refresh", "1")
    with open(m.p("m", "draft", "new.txt"), "w") as f:  # a draft with changes stays on its base
        f.write("mine")
    reg = Registry.open(store)
    root = reg.version("proj", "m", 1).root

    def pinned() -> bool:
        return root in gcstate.pinned_roots(reg.store, time.time())
    wait_for(pinned, 60, "the mount to pin its draft's base")
    Api().artifact("m:v1").delete()
    report = collect(reg, grace=0, keep_deleted=0)
    assert report.blobs == 0  # v1's files are the draft's base: kept
    assert read(m.p("m", "draft", "sub", "x")) == "x1" and read(m.p("m", "draft", "new.txt")) == "mine"
