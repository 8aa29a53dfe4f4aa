"""Versions keep empty folders (docs/store-format.md 3.5, 8): a git repository
written into a draft stays a repository after sync (its refs/heads is empty after
`git gc`), an empty folder survives put -> get, rmdir of one in a draft is
published as its removal, and a download never makes one through a symlink."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import skip_or_fail
from draft_helpers import publish
from mountutil import cli, mount_factory  # noqa: F401  (fixture)

from artifactfs.api.artifact import Artifact
from artifactfs.registry.manifest import EMPTY_DIR, EMPTY_TREE, walk_all
from artifactfs.registry.versions import Registry

BOTH_STORES = True  # the tests taking store_url run on a local and an S3 store (tests/conftest.py)
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
           "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"}


def git(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        skip_or_fail("git is not installed")
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def empty_folders(reg: Registry, name: str, version: int, project: str = "proj") -> set[str]:
    root = reg.version(project, name, version).root
    return {p for p, e in walk_all(reg, root) if e == EMPTY_DIR}


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", {"a/x": b"ax", "b/c/d": b"bcd"})
    return url


def test_a_git_repository_synced_from_a_draft_is_still_a_repository(store, mount_factory, tmp_path):
    """After `git gc` every ref is in packed-refs and refs/heads, refs/tags are empty:
    without them git no longer sees a repository in the version."""
    repo = str(tmp_path / "repo")
    assert git("init", "-q", "-b", "main", repo).returncode == 0
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write("print('train')\n")
    assert git("add", "train.py", cwd=repo).returncode == 0
    assert git("commit", "-q", "-m", "first", cwd=repo).returncode == 0
    assert git("gc", "-q", cwd=repo).returncode == 0
    assert os.listdir(os.path.join(repo, ".git", "refs", "heads")) == []  # what used to be lost
    m = mount_factory(store)
    shutil.copytree(repo, m.p("ds", "draft", "code"), symlinks=True)
    done = cli("sync", m.p("ds", "draft"), env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
    assert "empty folder" not in done.stderr, done.stderr
    assert {"code/.git/refs/heads", "code/.git/refs/tags"} <= empty_folders(Registry.open(store), "ds", 1)
    version = m.p("ds", "ds:v1", "code")
    log = git("-C", version, "log", "--format=%s")
    assert log.returncode == 0 and log.stdout == "first\n", log.stderr
    clone = str(tmp_path / "clone")
    done = git("clone", "-q", version, clone)
    assert done.returncode == 0, done.stderr
    assert open(os.path.join(clone, "train.py")).read() == "print('train')\n"
    got = str(tmp_path / "got")
    assert cli("--store", store, "--project", "proj", "get", "ds:v1", got, env=m.env).returncode == 0
    assert git("-C", os.path.join(got, "code"), "log", "--format=%s").stdout == "first\n"


def test_rmdir_of_an_empty_folder_in_a_draft_is_published(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    os.makedirs(f"{d}/e1/e2")
    os.mkdir(f"{d}/e3")
    os.remove(f"{d}/b/c/d")                      # b/c is left empty: it stays a folder
    os.mkfifo(f"{d}/e3/pipe")                    # a folder holding only what a version cannot hold
    status = cli("status", d, env=m.env)
    assert status.stdout.splitlines()[1:] == ["D b/c/d", "A e1/e2/", "A e3/",
                                              "kept in the draft only (a version cannot hold them): fifos: e3/pipe"]
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
    reg = Registry.open(store)
    assert empty_folders(reg, "ds", 1) == {"b/c", "e1/e2", "e3"}
    assert sorted(os.listdir(m.p("ds", "ds:v1"))) == ["a", "b", "e1", "e3"]
    assert os.listdir(m.p("ds", "ds:v1", "e1", "e2")) == []
    assert cli("sync", d, env=m.env, timeout=120).stdout == "ds:v1 (unchanged)\n"
    os.rmdir(f"{d}/e1/e2")                       # e1 is left empty: it stays, e2 goes
    os.rmdir(f"{d}/b/c")
    assert cli("status", d, env=m.env).stdout.splitlines()[1:3] == ["D b/c", "D e1/e2"]
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v2\n", done.stderr
    assert empty_folders(reg, "ds", 2) == {"b", "e1", "e3"}
    assert sorted(os.listdir(m.p("ds", "ds:v2"))) == ["a", "b", "e1", "e3"]
    assert os.listdir(m.p("ds", "ds:v2", "b")) == []
    os.rmdir(f"{d}/e1")
    os.rmdir(f"{d}/b")
    assert cli("sync", d, env=m.env, timeout=120).stdout == "ds:v3\n"
    assert empty_folders(reg, "ds", 3) == {"e3"}
    assert sorted(os.listdir(m.p("ds", "ds:v3"))) == ["a", "e3"]
    assert sorted(os.listdir(d)) == ["a", "e3"]


def test_an_empty_folder_survives_put_and_get(store_url, tmp_path):
    store = store_url
    src = tmp_path / "src"
    (src / "classes" / "cat").mkdir(parents=True)
    (src / "classes" / "dog").mkdir()            # an ImageFolder class with no images yet
    (src / "classes" / "cat" / "1.jpg").write_bytes(b"jpg")
    (src / "ckpt" / "optim" / "shards").mkdir(parents=True)
    base = ["--store", store, "--project", "proj"]
    done = cli(*base, "put", str(src), "ds", "--type", "dataset")
    assert done.returncode == 0 and done.stdout == "ds:v0\n" and "left out" not in done.stderr, done.stderr
    assert empty_folders(Registry.open(store), "ds", 0) == {"classes/dog", "ckpt/optim/shards"}
    out = tmp_path / "out"
    assert cli(*base, "get", "ds", str(out)).returncode == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "ckpt", "ckpt/optim", "ckpt/optim/shards", "classes", "classes/cat", "classes/cat/1.jpg", "classes/dog"]
    only = tmp_path / "only"
    assert cli(*base, "get", "ds", str(only), "--prefix", "classes/dog").returncode == 0
    assert [str(p.relative_to(only)) for p in only.rglob("*")] == ["classes", "classes/dog"]
    assert cli(*base, "put", str(src), "ds", "--type", "dataset").stdout == "ds:v0 (unchanged)\n"
    (src / "classes" / "bird").mkdir()           # only a new empty folder: a new version (the W&B digest is equal)
    assert cli(*base, "put", str(src), "ds", "--type", "dataset").stdout == "ds:v1\n"
    reg = Registry.open(store)
    assert reg.version("proj", "ds", 1).digest == reg.version("proj", "ds", 0).digest
    assert cli(*base, "files", "ds:v1").stdout.split() == ["3", "PkbQqlUi/ScNSwmLRzXsFg==", "classes/cat/1.jpg"]
    done = cli(*base, "gc", "--grace", "0s")     # the empty tree is live: gc keeps it
    assert done.returncode == 0, done.stderr
    again = tmp_path / "again"
    assert cli(*base, "get", "ds:v1", str(again)).returncode == 0
    assert sorted(p.name for p in (again / "classes").iterdir()) == ["bird", "cat", "dog"]


def test_the_api_keeps_removes_and_checks_out_empty_folders(store_url, tmp_path):
    store = store_url
    src = tmp_path / "src"
    (src / "empty" / "deeper").mkdir(parents=True)
    (src / "f").write_bytes(b"f")
    art = Artifact("ds", "dataset", store=store)
    art.add_dir(str(src))
    art.save("proj")
    assert sorted(art.manifest.entries) == ["f"]   # the W&B view lists files only
    out = tmp_path / "out"
    (out / "stray").mkdir(parents=True)
    Artifact._from_version(Registry.open(store), art._info).checkout(str(out))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["empty", "empty/deeper", "f"]
    draft = art.new_draft()
    draft.add_file(str(src / "f"), "g")
    draft.save()                                 # a new version from the old one keeps its empty folders
    assert draft.version == "v1" and empty_folders(Registry.open(store), "ds", 1) == {"empty/deeper"}
    draft = draft.new_draft()
    draft.remove("empty")
    draft.save()
    assert draft.version == "v2" and empty_folders(Registry.open(store), "ds", 2) == set()
    with pytest.raises(FileNotFoundError):
        draft.new_draft().remove("empty")


def test_a_download_makes_no_folder_through_a_symlink(tmp_path):
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    base = ["--store", store, "--project", "proj"]
    assert cli(*base, "put", str(src), "ds", "--type", "dataset").returncode == 0
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    os.symlink(outside, out / "a")
    done = cli(*base, "get", "ds", str(out))
    assert done.returncode == 1 and "not a directory" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(outside) == []
    assert Registry.open(store).lookup(Registry.open(store).version("proj", "ds", 0).root, "a/b").tree == EMPTY_TREE


def test_a_folder_emptied_in_a_draft_merges_with_another_writers_files(store, mount_factory, tmp_path):
    """Keeping a folder the draft emptied is no claim on what it holds: a file another
    writer added there meanwhile stays (no conflict), as it did before folders were kept."""
    m = mount_factory(store)
    d = m.p("ds", "draft")
    os.remove(f"{d}/b/c/d")
    os.mkdir(f"{d}/new")
    publish(Registry.open(store), str(tmp_path / "pub2"), "ds", {"b/c/theirs": b"t"})
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v2\n", done.stderr
    assert sorted(os.listdir(m.p("ds", "ds:v2", "b", "c"))) == ["theirs"]
    assert empty_folders(Registry.open(store), "ds", 2) == {"new"}
    assert sorted(os.listdir(f"{d}/b/c")) == ["theirs"] and os.listdir(f"{d}/new") == []


def test_folders_moved_in_a_draft_keep_or_lose_their_files_as_moved(store, mount_factory):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    os.mkdir(f"{d}/e")
    assert cli("sync", d, env=m.env, timeout=120).stdout == "ds:v1\n"
    os.rename(f"{d}/e", f"{d}/f")                # an empty folder of the base, moved
    os.rename(f"{d}/a", f"{d}/z")                # a folder of files, moved, then emptied
    os.remove(f"{d}/z/x")
    os.mkdir(f"{d}/b/c/d2")
    os.rename(f"{d}/b/c/d2", f"{d}/b/c/d3")      # a new empty folder, moved
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v2\n", done.stderr
    assert empty_folders(Registry.open(store), "ds", 2) == {"f", "z", "b/c/d3"}
    assert sorted(os.listdir(m.p("ds", "ds:v2"))) == ["b", "f", "z"]
    assert sorted(os.listdir(m.p("ds", "ds:v2", "b", "c"))) == ["d", "d3"]


def test_a_folder_another_writer_removed_that_the_draft_holds_empty_stays(store, mount_factory, tmp_path):
    m = mount_factory(store)
    d = m.p("ds", "draft")
    os.remove(f"{d}/b/c/d")
    publish(Registry.open(store), str(tmp_path / "pub2"), "ds", {"b/c/d": None})
    done = cli("sync", d, env=m.env, timeout=120)
    assert done.returncode == 0 and done.stdout == "ds:v2\n", done.stderr
    assert empty_folders(Registry.open(store), "ds", 2) == {"b/c"}
