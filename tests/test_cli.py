"""The command line: output formats, exit codes, one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import randbytes
from draft_helpers import publish

from artifactfs.registry.versions import Registry


def run(args: list[str], env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], env=env, capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode != 0
        assert "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ, ARTIFACTFS_STORE=str(tmp_path / "store"), ARTIFACTFS_PROJECT="p")
    return env


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("hello")
    (d / "sub" / "b.bin").write_bytes(randbytes(5000))
    return d


def test_put_ls_info_get_verify(cli_env, data, tmp_path):
    assert run(["put", str(data), "ds", "--type", "dataset", "--metadata", "k=1", "--alias", "best"],
               cli_env).stdout.strip() == "ds:v0"
    assert run(["put", str(data), "ds", "--type", "dataset"], cli_env).stdout.strip() == "ds:v0 (unchanged)"
    (data / "a.txt").write_text("changed")
    assert run(["put", str(data), "ds", "--type", "dataset"], cli_env).stdout.strip() == "ds:v1"
    out = run(["ls"], cli_env).stdout
    assert "ds" in out and "dataset" in out and "v1" in out
    out = run(["ls", "ds"], cli_env).stdout.splitlines()
    assert out[1].startswith("v0") and "best" in out[1]
    assert json.loads(run(["ls", "--json"], cli_env).stdout) == [
        {"name": "ds", "type": "dataset", "versions": 2, "latest": "v1"}]
    listed = json.loads(run(["ls", "ds", "--json"], cli_env).stdout)
    assert [v["version"] for v in listed] == ["v0", "v1"] and listed[0]["aliases"] == ["best"]
    assert listed[0]["metadata"] == {"k": 1} and listed[1]["file_count"] == 2
    assert out[2].startswith("v1") and "latest" in out[2]
    info = json.loads(run(["info", "ds:best", "--json"], cli_env).stdout)
    assert info["version"] == "v0" and info["metadata"] == {"k": 1} and info["file_count"] == 2
    files = run(["files", "ds:latest", "sub"], cli_env).stdout.split()
    assert files[0] == "5000" and files[2] == "sub/b.bin"
    dest = tmp_path / "dest"
    run(["get", "ds:v0", str(dest)], cli_env)
    assert (dest / "a.txt").read_text() == "hello"
    run(["verify", "ds:v0", str(dest)], cli_env)
    p = subprocess.run([sys.executable, "-m", "artifactfs", "verify", "ds:v1", str(dest)], env=cli_env,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "a.txt: content does not match" in p.stderr


def test_verify_names_each_bad_file(cli_env, data, tmp_path):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)
    dest = tmp_path / "dest"
    run(["get", "ds", str(dest)], cli_env)
    (dest / "a.txt").write_text("tampered")
    (dest / "sub" / "b.bin").unlink()
    p = subprocess.run([sys.executable, "-m", "artifactfs", "verify", "ds", str(dest)], env=cli_env,
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert "a.txt: content does not match" in p.stderr and "sub/b.bin: missing" in p.stderr
    run(["get", "ds", str(tmp_path / "right")], cli_env)
    shutil.rmtree(dest / "sub")  # a right copy, reached through a symlink: verify follows nothing
    os.symlink(tmp_path / "right" / "sub", dest / "sub")
    p = subprocess.run([sys.executable, "-m", "artifactfs", "verify", "ds", str(dest)], env=cli_env,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "sub/b.bin: a symlink or file where a folder belongs" in p.stderr


def test_verify_of_paths_longer_than_path_max(cli_env, tmp_path):
    """get and verify a file 20 folders of 250 bytes deep (5,000 bytes: more than
    PATH_MAX): each folder is opened from its parent's descriptor."""
    deep = "/".join(f"{i:02d}" + "d" * 248 for i in range(20)) + "/leaf"
    publish(Registry.open(cli_env["ARTIFACTFS_STORE"], create=True), str(tmp_path / "pub"), "deep", {deep: b"deep"},
            project=cli_env["ARTIFACTFS_PROJECT"])
    run(["get", "deep", str(tmp_path / "out")], cli_env)
    ok = subprocess.run([sys.executable, "-m", "artifactfs", "verify", "deep", str(tmp_path / "out")], env=cli_env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_get_prefix(cli_env, data, tmp_path):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)
    dest = tmp_path / "dest"
    run(["get", "ds", str(dest), "--prefix", "sub"], cli_env)
    assert sorted(os.listdir(dest)) == ["sub"]
    assert run(["verify", "ds", str(dest), "--prefix", "sub"], cli_env).stdout == "ds:v0: 1 files OK\n"
    whole = subprocess.run([sys.executable, "-m", "artifactfs", "verify", "ds", str(dest)], env=cli_env,
                           capture_output=True, text=True)
    assert whole.returncode == 1 and "a.txt: missing" in whole.stderr
    assert run(["verify", "ds", str(dest), "--prefix", "nope"], cli_env, ok=False).stderr == \
        "Error: no file or folder nope in ds:v0\n"


def test_alias_and_tag(cli_env, data):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)
    run(["alias", "add", "ds:v0", "prod"], cli_env)
    run(["tag", "add", "ds:v0", "reviewed"], cli_env)
    info = json.loads(run(["info", "ds:prod", "--json"], cli_env).stdout)
    assert "prod" in info["aliases"] and info["tags"] == ["reviewed"]
    run(["alias", "rm", "ds:v0", "prod"], cli_env)
    run(["tag", "rm", "ds:v0", "reviewed"], cli_env)
    info = json.loads(run(["info", "ds:v0", "--json"], cli_env).stdout)
    assert info["aliases"] == ["latest"] and info["tags"] == []
    run(["alias", "add", "ds:v0", "latest"], cli_env, ok=False)
    run(["alias", "rm", "ds:v0", "prod"], cli_env, ok=False)


@pytest.mark.parametrize("args", [
    ["put", "/does/not/exist", "ds", "--type", "dataset"],
    ["put", "{data}", "bad name", "--type", "dataset"],
    ["put", "{data}", "ds", "--type", "job"],
    ["put", "{data}", "ds", "--type", "dataset", "--metadata", "novalue"],
    ["get", "missing:v0", "{tmp}/x"],
    ["get", "ds:v9", "{tmp}/x"],
    ["info", "ds:nosuchalias"],
    ["--store", "/does/not/exist", "ls"],
    ["--store", "s3x://what", "ls"],
])
def test_bad_input_is_one_line(cli_env, data, tmp_path, args):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    run(args, cli_env, ok=False)


def test_read_only_command_refuses_non_store(cli_env, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    p = run(["--store", str(other), "ls"], cli_env, ok=False)
    assert "store" in p.stderr
    assert os.listdir(other) == ["file"]


def test_metadata_limit(cli_env, data):
    args = ["put", str(data), "ds", "--type", "dataset"]
    for i in range(101):
        args += ["--metadata", f"k{i}={i}"]
    p = run(args, cli_env, ok=False)
    assert "100" in p.stderr


def test_store_and_project_may_follow_the_command(tmp_path):
    """`artifactfs ls --store URL` works as `artifactfs --store URL ls` does, and the
    option after the command wins over the one before it."""
    env = {k: v for k, v in os.environ.items() if k not in ("ARTIFACTFS_STORE", "ARTIFACTFS_PROJECT")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # the default store: must stay untouched
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    store = str(tmp_path / "store")
    run(["put", str(src), "ds", "--type", "dataset", "--store", store, "--project", "proj"], env)
    listed = run(["--store", str(tmp_path / "absent"), "ls", "--store", store, "--project", "proj"], env)
    assert listed.stdout.split("\n")[1].split()[:2] == ["ds", "dataset"]
    assert run(["ls", "--store", store], env).stdout.strip() == "NAME  TYPE  VERSIONS  LATEST"  # project 'default'
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "absent").exists()
    help_text = run(["ls", "--help"], env).stdout
    assert "--store URL" in help_text and "$XDG_DATA_HOME/artifactfs/store" in help_text


def test_files_of_a_missing_folder_is_one_line(cli_env, data):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)
    p = run(["files", "ds:v0", "nope/path"], cli_env, ok=False)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip() == "Error: no file or folder nope/path in ds:v0"
    assert run(["files", "ds:v0", "sub/b.bin"], cli_env).stdout.split()[2] == "sub/b.bin"


def test_info_shows_the_ttl_as_ttl_takes_it(cli_env, data):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)

    def shown_ttl() -> str:
        line = next(ln for ln in run(["info", "ds:v0"], cli_env).stdout.splitlines() if ln.startswith("ttl:"))
        return line.split(None, 1)[1]
    assert shown_ttl() == "inherit (default none)"
    assert run(["ttl", "--default", "36h"], cli_env).stdout.strip() == "project p: default TTL 36h"
    assert shown_ttl() == "inherit (default 36h)"
    for given, text, seconds in (("30d", "30d", 30 * 86400), ("2w", "14d", 14 * 86400), ("90m", "90m", 5400),
                                 ("none", "none", -1)):
        run(["ttl", "ds:v0", given], cli_env)
        assert shown_ttl() == text
        assert json.loads(run(["info", "ds:v0", "--json"], cli_env).stdout)["ttl"] == seconds
    assert "ttl in seconds" in " ".join(run(["info", "--help"], cli_env).stdout.split())


def test_unknown_and_empty_projects(cli_env, data):
    run(["put", str(data), "ds", "--type", "dataset"], cli_env)
    p = run(["--project", "nope", "ls"], cli_env)
    assert p.stderr.strip() == "project 'nope' has no collections (projects in this store: p)"
    assert p.stdout.split() == ["NAME", "TYPE", "VERSIONS", "LATEST"]
    assert run(["ls"], cli_env).stderr == ""
    for args in (["--project", "", "ls"], ["ls", "--project", ""], ["mount", "--project", "", "/nonexistent"]):
        p = run(args, cli_env, ok=False)
        assert "invalid project ''" in p.stderr


def test_put_help_documents_every_option_and_project_names(cli_env, data):
    text = " ".join(run(["put", "--help"], cli_env).stdout.split())
    assert "NAME may be PROJECT/NAME" in text
    for option in ("--description TEXT", "--metadata KEY=VALUE", "--alias ALIAS", "--tag TAG"):
        after = text.split(option, 1)[1].split(" --", 1)[0]
        assert len(after.split()) >= 3, (option, after)  # a help text follows the option
    run(["put", str(data), "q/ds", "--type", "dataset", "--project", "p"], cli_env)
    assert "ds" in run(["--project", "q", "ls"], cli_env).stdout


def test_mount_help_names_xdg_cache_home(cli_env):
    text = " ".join(run(["mount", "--help"], cli_env).stdout.split())
    assert "$XDG_CACHE_HOME/artifactfs" in text


def test_every_command_takes_dash_h(cli_env):
    """`-h` is `--help` for every command, `sync` included (it starts through a
    shorter path, cli/__init__.py)."""
    from artifactfs.cli.main import main
    for name in sorted(main.commands):
        p = run([name, "-h"], cli_env)
        assert p.stdout.startswith("Usage: ") and f" {name} [OPTIONS]" in p.stdout.splitlines()[0], name


def test_a_file_as_store_is_one_line(cli_env, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for args in (["--store", str(f), "ls"], ["--store", str(f), "put", str(f), "ds", "--type", "dataset"]):
        p = run(args, cli_env, ok=False)
        assert p.stderr.strip() == f"Error: {f} is a file, not a store directory"
    assert f.read_text() == "x"


def test_unchanged_put_says_metadata_was_not_changed(cli_env, data):
    run(["put", str(data), "ds", "--type", "dataset", "--metadata", "k=1", "--description", "first"], cli_env)
    p = run(["put", str(data), "ds", "--type", "dataset", "--metadata", "k=1", "--description", "first"], cli_env)
    assert p.stdout.strip() == "ds:v0 (unchanged)" and p.stderr == ""
    p = run(["put", str(data), "ds", "--type", "dataset", "--metadata", "k=2", "--description", "second",
             "--tag", "t"], cli_env)
    assert p.stdout.strip() == "ds:v0 (unchanged)"
    note = p.stderr.strip()
    assert len(note.splitlines()) == 1
    assert "keeps its description and metadata" in note and "Api().artifact('p/ds:v0')" in note
    info = json.loads(run(["info", "ds:v0", "--json"], cli_env).stdout)
    assert info["metadata"] == {"k": 1} and info["description"] == "first" and info["tags"] == ["t"]
    p = run(["put", str(data), "ds", "--type", "dataset", "--metadata", "k=3"], cli_env)
    assert "keeps its metadata:" in p.stderr


def test_an_entity_other_than_the_stores_is_refused_as_the_api_does(cli_env, data, tmp_path):
    """'entity/project/name': the entity is the store's name ('store' here), in the
    CLI as in Api().artifact(); before, put ignored another entity and wrote na/me."""
    from artifactfs import Api, NotFoundError
    p = run(["put", str(data), "bad/na/me", "--type", "dataset"], cli_env, ok=False)
    assert p.returncode == 1 and "entity 'bad' is not this store's ('store')" in p.stderr
    assert not os.path.exists(tmp_path / "store"), "a refused put made the store"
    assert run(["put", str(data), "store/na/me", "--type", "dataset"], cli_env).stdout.strip() == "me:v0"
    for args in (["put", str(data), "bad/na/me", "--type", "dataset"], ["ls", "bad/na/me"],
                 ["get", "bad/na/me:v0", str(tmp_path / "out")], ["info", "bad/na/me"]):
        assert "entity 'bad'" in run(args, cli_env, ok=False).stderr
    assert run(["ls", "store/na/me"], cli_env).stdout.splitlines()[1].startswith("v0")
    with pytest.raises(NotFoundError, match="entity 'bad'"):
        Api(store=cli_env["ARTIFACTFS_STORE"]).artifact("bad/na/me:v0")
    assert Api(store=cli_env["ARTIFACTFS_STORE"]).artifact("store/na/me:v0").name == "me:v0"
