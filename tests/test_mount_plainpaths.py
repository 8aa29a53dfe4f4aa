"""Versions and aliases spelled without ':' (`NAME@vN`, `NAME@ALIAS`), exercised
with the programs that read ':' as a separator: tar, rsync, PYTHONPATH."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import skip_or_fail
from mountutil import cli, mounted
from test_mount_read import commit

from artifactfs.registry.versions import Registry


@pytest.fixture(scope="module")
def mnt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    store = str(tmp / "store")
    Registry.open(store, create=True)
    src = str(tmp / "src")
    commit(store, "w", src, {"pkgs/hello_af.py": b"VALUE = 'v0'\n"})
    shards = tmp / "shards"
    shards.mkdir()
    with tarfile.open(shards / "x.tar", "w") as tar:
        for name in ("a.txt", "b.txt"):
            p = shards / name
            p.write_bytes(name.encode())
            tar.add(p, arcname=name)
    commit(store, "w", src, {"pkgs/hello_af.py": b"VALUE = 'v1'\n", "x.tar": (shards / "x.tar").read_bytes()},
           aliases=("best",))
    with mounted(store, tmp / "mnt", "--cache-dir", str(tmp / "cache")) as m:
        yield m


def test_at_spelling_mirrors_the_colon_names(mnt):
    coll = mnt.p("w")
    listed = set(os.listdir(coll))
    assert "w:v1" in listed and not any("@" in n for n in listed)  # looked up, not listed: du/find count once
    assert os.path.isdir(os.path.join(coll, "w@v0")) and os.path.isdir(os.path.join(coll, "w@v1"))
    assert os.readlink(os.path.join(coll, "w@latest")) == "w@v1"
    assert os.readlink(os.path.join(coll, "w@best")) == "w@v1"
    assert os.path.realpath(os.path.join(coll, "w@latest", "pkgs")) == os.path.join(
        os.path.realpath(coll), "w@v1", "pkgs")
    assert sorted(os.listdir(os.path.join(coll, "w@v1"))) == sorted(os.listdir(os.path.join(coll, "w:v1")))
    with open(os.path.join(coll, "w@v0", "pkgs", "hello_af.py"), "rb") as f:
        assert f.read() == b"VALUE = 'v0'\n"
    for bad in ("w@v7", "w@nope", "x@v0", "w@", "@v0"):
        assert not os.path.lexists(os.path.join(coll, bad)), bad


def test_pythonpath_import(mnt):
    env = dict(os.environ, PYTHONPATH=mnt.p("w", "w@latest", "pkgs"))
    out = subprocess.run([sys.executable, "-c", "import hello_af; print(hello_af.VALUE)"],
                         capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "v1"


def _need(program: str) -> None:
    if shutil.which(program) is None:
        skip_or_fail(f"{program} is not installed")


def test_tar_lists_through_the_alias(mnt):
    _need("tar")
    out = subprocess.run(["tar", "-tf", mnt.p("w", "w@latest", "x.tar")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a.txt", "b.txt"]


def test_rsync_copies_a_version(mnt, tmp_path):
    _need("rsync")
    dest = tmp_path / "copy"
    out = subprocess.run(["rsync", "-a", mnt.p("w", "w@best") + "/", str(dest)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (dest / "pkgs" / "hello_af.py").read_bytes() == b"VALUE = 'v1'\n"
    assert (dest / "x.tar").stat().st_size == os.stat(mnt.p("w", "w:v1", "x.tar")).st_size


def test_the_cli_takes_a_path_into_the_mount_for_a_name(mnt):
    """`artifactfs info /mnt/af/w/w:latest` names what the mount shows there: a
    version folder (through an alias link: the version it points at), anything
    inside one, or a collection folder; a path outside any mount stays an error."""
    for path, shown in ((mnt.p("w", "w:v0"), "w:v0"), (mnt.p("w", "w:best"), "w:v1"),
                        (mnt.p("w", "w@v0", "pkgs", "hello_af.py"), "w:v0"), (mnt.p("w"), "w:v1")):
        done = cli("info", path, env=mnt.env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0].split() == ["name:", shown], done.stdout
    done = cli("info", os.path.join(os.path.dirname(mnt.path), "not", "w:v0"), env=mnt.env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
