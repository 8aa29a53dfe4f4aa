"""What put reads from a user's folder and what get/download/checkout/verify write
there: symlinks kept or followed, never written through; mtimes and hard links;
prefix selection; every local error one line naming the path."""
from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys

import pytest
import xxhash
from mountutil import mounted

from artifactfs import Api, Artifact
from artifactfs.chunks import download
from artifactfs.errors import LocalFileError
from artifactfs.registry.manifest import FileEntry, SymlinkEntry
from artifactfs.registry.versions import Registry

P = "p"
T0 = 1_500_000_000_123_456_789


def run(env: dict, *args: str, ok: bool | None = True) -> subprocess.CompletedProcess:
    """Run the CLI; ok=True: it must succeed, False: fail with one line, None: anything."""
    done = subprocess.run([sys.executable, "-m", "artifactfs", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    if ok is None:
        return done
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1, (done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done


@pytest.fixture
def env(tmp_path) -> dict:
    return dict(os.environ, ARTIFACTFS_STORE=str(tmp_path / "store"), ARTIFACTFS_PROJECT=P)


def write(path, data: bytes, mtime_ns: int | None = None) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return str(path)


@pytest.fixture
def linked(tmp_path) -> str:
    """A folder with a file, a sub-folder and every kind of symlink."""
    src = tmp_path / "src"
    write(src / "f.txt", b"file", T0)
    write(src / "sub" / "g.bin", b"gee", T0 + 1)
    os.symlink("f.txt", src / "rel")
    os.symlink("sub", src / "dirlink")
    os.symlink("/nonexistent/elsewhere", src / "dangling")
    os.symlink("self", src / "self")
    os.symlink("../../outside", src / "sub" / "up")
    return str(src)


def entries(env: dict, name: str) -> dict:
    return dict(Api(env["ARTIFACTFS_STORE"], project=P).artifact(name).manifest.entries)


# -- symlinks --------------------------------------------------------------------
def test_put_keeps_symlinks_and_get_recreates_them(env, linked, tmp_path):
    assert run(env, "put", linked, "ds", "--type", "dataset").stdout.strip() == "ds:v0"
    got = entries(env, "ds")
    assert {p: e.target for p, e in got.items() if isinstance(e, SymlinkEntry)} == {
        "rel": "f.txt", "dirlink": "sub", "dangling": "/nonexistent/elsewhere", "self": "self",
        "sub/up": "../../outside"}
    assert got["f.txt"].mtime_ns == T0 and got["sub/g.bin"].mtime_ns == T0 + 1
    listing = run(env, "files", "ds").stdout
    assert "  self -> self\n" in listing and "  sub/up -> ../../outside\n" in listing
    dest = tmp_path / "dest"
    run(env, "get", "ds", str(dest))
    for link in ("rel", "dirlink", "dangling", "self", "sub/up"):
        assert os.readlink(dest / link) == os.readlink(os.path.join(linked, link)), link
    assert os.stat(dest / "f.txt").st_mtime_ns == T0 and os.stat(dest / "sub" / "g.bin").st_mtime_ns == T0 + 1
    assert not os.path.exists(tmp_path / "outside")
    run(env, "verify", "ds", str(dest))
    os.remove(dest / "rel")
    os.symlink("sub/g.bin", dest / "rel")
    bad = run(env, "verify", "ds", str(dest), ok=None)
    assert bad.returncode == 1 and bad.stderr.splitlines()[0] == "rel: not a symlink to f.txt"
    run(env, "get", "ds", str(dest))  # the wrong link is replaced, by rename
    assert os.readlink(dest / "rel") == "f.txt"
    assert run(env, "put", str(dest), "ds", "--type", "dataset").stdout.strip() == "ds:v0 (unchanged)"


def test_put_follow_symlinks(env, tmp_path):
    src = tmp_path / "src"
    write(src / "f.txt", b"file")
    write(src / "sub" / "g.bin", b"gee")
    os.symlink("f.txt", src / "rel")
    os.symlink("sub", src / "dirlink")
    run(env, "put", str(src), "ds", "--type", "dataset", "--follow-symlinks")
    got = entries(env, "ds")
    assert sorted(got) == ["dirlink/g.bin", "f.txt", "rel", "sub/g.bin"]
    assert all(isinstance(e, FileEntry) for e in got.values()) and got["rel"].digest == got["f.txt"].digest
    os.symlink("self", src / "self")
    loop = run(env, "put", str(src), "ds", "--type", "dataset", "--follow-symlinks", ok=False)
    assert "self" in loop.stderr and "Too many levels of symbolic links" in loop.stderr
    os.remove(src / "self")
    os.symlink(str(tmp_path / "missing"), src / "dangling")  # (not /nonexistent: other programs may make it)
    assert "dangling" in run(env, "put", str(src), "ds", "--type", "dataset", "--follow-symlinks", ok=False).stderr
    os.remove(src / "dangling")
    os.symlink("..", src / "sub" / "up")
    circle = run(env, "put", str(src), "ds", "--type", "dataset", "--follow-symlinks", ok=False)
    assert "/up: " in circle.stderr and "contains it" in circle.stderr
    run(env, "put", str(src), "ds", "--type", "dataset")  # kept as links, the same folder is fine
    assert [v.version for v in Api(env["ARTIFACTFS_STORE"], project=P).artifact_versions("ds")] == ["v0", "v1"]


def test_api_add_dir_follows_like_wandb_unless_asked(env, linked, tmp_path):
    os.remove(os.path.join(linked, "dangling"))
    os.remove(os.path.join(linked, "self"))
    os.remove(os.path.join(linked, "sub", "up"))
    art = Artifact("ds", "dataset", store=env["ARTIFACTFS_STORE"])
    art.add_dir(linked)
    assert sorted(art.manifest.entries) == ["dirlink/g.bin", "f.txt", "rel", "sub/g.bin"]
    kept = Artifact("ds", "dataset", store=env["ARTIFACTFS_STORE"])
    kept.add_dir(linked, follow_symlinks=False)
    assert kept.manifest.entries["rel"] == SymlinkEntry("f.txt")
    assert kept.manifest.to_manifest_json()["contents"]["rel"]["extra"] == {"alg": "XXH128", "symlink": "f.txt"}


def file_entry(data: bytes) -> FileEntry:
    raw = xxhash.xxh3_128_digest(data)
    return FileEntry(base64.b64encode(raw).decode(), len(data), (raw.hex(),))


def test_a_symlink_entry_before_a_file_below_it_never_leads_outside(tmp_path):
    reg = Registry.open(str(tmp_path / "store"), create=True)
    reg.put_blob(xxhash.xxh3_128_hexdigest(b"evil"), b"evil")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    crafted = [("a", SymlinkEntry(str(outside))), ("a/owned", file_entry(b"evil")),
               ("b", SymlinkEntry("../outside")), ("b/c/owned", file_entry(b"evil"))]
    for items in (crafted, crafted[::-1], crafted[:1] + crafted[2:3], crafted[1:2] + crafted[3:]):
        with pytest.raises(LocalFileError):
            download.download_many(reg, str(dest), items)
            download.download_many(reg, str(dest), crafted)  # whatever the first left behind
        assert list(outside.iterdir()) == []
    assert not [p for p in dest.rglob("*") if p.name.startswith(".artifactfs-")]


def test_a_version_turning_a_symlink_into_a_folder_is_refused_on_top_of_the_old(env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    src = tmp_path / "src"
    write(src / "x", b"x")
    os.symlink(str(outside), src / "data")
    run(env, "put", str(src), "ds", "--type", "dataset")
    dest = tmp_path / "dest"
    run(env, "get", "ds:v0", str(dest))
    os.remove(src / "data")
    write(src / "data" / "weights.bin", b"w")
    run(env, "put", str(src), "ds", "--type", "dataset")
    err = run(env, "get", "ds:v1", str(dest), ok=False).stderr
    assert "data" in err and "not a directory" in err
    assert list(outside.iterdir()) == []
    with pytest.raises(LocalFileError):
        Api(env["ARTIFACTFS_STORE"], project=P).artifact("ds:v1").checkout(str(dest))
    assert list(outside.iterdir()) == []


def test_checkout_removes_extra_symlinks_without_following_them(env, linked, tmp_path):
    run(env, "put", linked, "ds", "--type", "dataset")
    victim = write(tmp_path / "elsewhere" / "precious", b"keep me")
    dest = tmp_path / "dest"
    write(dest / "extra.txt", b"x")
    os.symlink(os.path.dirname(victim), dest / "extra-dir-link")
    os.symlink(victim, dest / "extra-file-link")
    art = Api(env["ARTIFACTFS_STORE"], project=P).artifact("ds")
    with pytest.raises(ValueError, match="extra-dir-link: not in ds:v0"):
        art.verify(str(dest))
    art.checkout(str(dest))
    art.verify(str(dest))
    assert sorted(os.listdir(dest)) == ["dangling", "dirlink", "f.txt", "rel", "self", "sub"]
    assert open(victim, "rb").read() == b"keep me"


def test_hard_links_are_two_entries_and_two_files(env, tmp_path):
    src = tmp_path / "src"
    write(src / "a", b"linked", T0)
    os.link(src / "a", src / "b")
    run(env, "put", str(src), "ds", "--type", "dataset")
    got = entries(env, "ds")
    assert got["a"].digest == got["b"].digest and got["a"].chunks == got["b"].chunks
    dest = tmp_path / "dest"
    run(env, "get", "ds", str(dest))
    a, b = os.stat(dest / "a"), os.stat(dest / "b")
    assert a.st_ino != b.st_ino and a.st_nlink == b.st_nlink == 1 and a.st_mtime_ns == T0


def test_executable_bit_and_mtime_of_an_existing_matching_file(env, tmp_path):
    src = tmp_path / "src"
    write(src / "run.sh", b"#!/bin/sh\n", T0)
    os.chmod(src / "run.sh", 0o755)
    run(env, "put", str(src), "ds", "--type", "dataset")
    dest = tmp_path / "dest"
    write(dest / "run.sh", b"#!/bin/sh\n")  # same bytes, today's time: kept, its time set
    ino = os.stat(dest / "run.sh").st_ino
    run(env, "get", "ds", str(dest))
    st = os.stat(dest / "run.sh")
    assert st.st_ino == ino and st.st_mtime_ns == T0
    fresh = tmp_path / "fresh"
    run(env, "get", "ds", str(fresh))
    assert stat.S_IMODE(os.stat(fresh / "run.sh").st_mode) == 0o755


# -- prefixes ----------------------------------------------------------
PREFIX_FILES = ["a/b/c", "a/b-c", "a/b.txt", "a/b0", "a/bb/d", "a/b/e/f"]


def downloaded(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_cli_prefix_is_a_folder_and_the_api_prefix_is_wandbs_startswith(env, tmp_path):
    src = tmp_path / "src"
    for p in PREFIX_FILES:
        write(src / p, p.encode())
    run(env, "put", str(src), "ds", "--type", "dataset")
    for prefix in ("a/b", "a/b/", "/a/b"):
        run(env, "get", "ds", str(tmp_path / f"cli{len(prefix)}"), "--prefix", prefix)
        assert downloaded(tmp_path / f"cli{len(prefix)}") == ["a/b/c", "a/b/e/f"], prefix
    run(env, "get", "ds", str(tmp_path / "one"), "--prefix", "a/b.txt")
    assert downloaded(tmp_path / "one") == ["a/b.txt"]
    err = run(env, "get", "ds", str(tmp_path / "none"), "--prefix", "a/b.t", ok=False).stderr
    assert "no file or folder a/b.t in ds:v0" in err and not os.path.exists(tmp_path / "none")
    files = run(env, "files", "ds", "a/b").stdout.splitlines()
    assert [line.split()[-1] for line in files] == ["a/b/c", "a/b/e/f"]
    art = Api(env["ARTIFACTFS_STORE"], project=P).artifact("ds")
    art.download(str(tmp_path / "api-slash"), path_prefix="a/b/")
    assert downloaded(tmp_path / "api-slash") == ["a/b/c", "a/b/e/f"]
    art.download(str(tmp_path / "api-raw"), path_prefix="a/b")
    assert downloaded(tmp_path / "api-raw") == sorted(PREFIX_FILES)
    art.download(str(tmp_path / "api-b."), path_prefix="a/b.")
    assert downloaded(tmp_path / "api-b.") == ["a/b.txt"]


# -- one-line errors naming the path --------------------------------------
def test_put_errors_name_the_path_and_publish_nothing(env, tmp_path):
    src = tmp_path / "src"
    write(src / "ok", b"ok")
    bad = os.path.join(os.fsencode(src), b"bad\xe9name")
    with open(bad, "wb") as f:
        f.write(b"x")
    err = run(env, "put", str(src), "ds", "--type", "dataset", ok=False).stderr
    assert "bad\\xe9name" in err and "UTF-8" in err
    os.remove(bad)
    os.symlink(b"target\xff", os.path.join(os.fsencode(src), b"badlink"))
    err = run(env, "put", str(src), "ds", "--type", "dataset", ok=False).stderr
    assert "badlink" in err and "UTF-8" in err
    os.remove(os.path.join(src, "badlink"))
    os.symlink("/proc/self/mem", src / "mem")  # a regular file whose read fails with EIO, even as root
    err = run(env, "put", str(src), "ds", "--type", "dataset", "--follow-symlinks", ok=False).stderr
    assert f"cannot read {src}/mem: Input/output error" in err
    err = run(env, "put", "/proc/self/mem", "ds", "--type", "dataset", ok=False).stderr
    assert "/proc/self/mem" in err
    os.mkdir(src / "a\nb")
    os.symlink("self", src / "a\nb" / "self")
    err = run(env, "put", str(src), "ds", "--type", "dataset", "--follow-symlinks", ok=False).stderr
    assert "a\\nb/self" in err
    assert "ds" not in run(env, "ls", ok=None).stdout


def test_get_and_checkout_errors_are_one_line_and_leave_no_partial_file(env, tmp_path):
    src = tmp_path / "src"
    write(src / "d" / "f", b"f" * 100_000)
    write(src / "top", b"t")
    run(env, "put", str(src), "ds", "--type", "dataset")
    write(src / "d" / "g", b"g")
    run(env, "put", str(src), "ds", "--type", "dataset")
    with mounted(env["ARTIFACTFS_STORE"], tmp_path / "mnt", project=P) as m:
        ro = m.p("ds", "ds:v0")  # a read-only folder: EROFS even for root
        err = run(env, "get", "ds:v1", ro, ok=False).stderr
        assert f"cannot write {ro}/d/g: Read-only file system" in err
        err = run(env, "get", "ds:v1", os.path.join(ro, "new"), ok=False).stderr
        assert f"cannot write {ro}/new: Read-only file system" in err
        with pytest.raises(LocalFileError, match="Read-only file system"):
            Api(env["ARTIFACTFS_STORE"], project=P).artifact("ds:v1").checkout(ro)
    dest = tmp_path / "dest"
    write(dest / "d", b"a file where a folder goes")
    err = run(env, "get", "ds:v1", str(dest), ok=False).stderr
    assert f"cannot write {dest}/d/f: d is not a directory" in err
    assert not [n for n in os.listdir(dest) if n.startswith(".artifactfs-")]
    assert open(dest / "d", "rb").read() == b"a file where a folder goes"


def test_a_store_path_with_url_characters_is_the_same_store_everywhere(tmp_path):
    """A store URL is passed on (to the mount daemon, to drafts): '%', '#', '?', tab must
    come back as the same path, not 'odd ' with a fragment (every join and split)."""
    store = str(tmp_path / "odd #1 100%41?x\ty")
    env = dict(os.environ, ARTIFACTFS_STORE=store, ARTIFACTFS_PROJECT=P)
    write(tmp_path / "src" / "f.txt", b"same store")
    run(env, "put", str(tmp_path / "src"), "ds", "--type", "dataset")
    assert {"artifactfs-store.json", "blobs", "projects", "trees"} <= set(os.listdir(store))
    assert Api(store, project=P).artifact("ds").entity == "odd #1 100%41?x\ty"
    with mounted(store, tmp_path / "mnt", project=P) as m:
        with open(m.p("ds", "ds:v0", "f.txt"), "rb") as f:
            assert f.read() == b"same store"
    assert sorted(os.listdir(tmp_path)) == sorted(["odd #1 100%41?x\ty", "src", "mnt", ".state-mnt"])


def test_put_leaves_out_fifos_and_sockets_with_one_line_each(env, tmp_path):
    import socket
    src = tmp_path / "src"
    write(src / "f.txt", b"f")
    os.mkfifo(src / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        done = run(env, "put", str(src), "ds", "--type", "dataset")
    finally:
        sock.close()
    assert done.stderr.splitlines() == [f"warning: left out {src}/pipe: a fifo cannot be part of a version",
                                        f"warning: left out {src}/sock: a socket cannot be part of a version"]
    assert sorted(entries(env, "ds")) == ["f.txt"]
