"""`get` stopped or refused part-way leaves the destination as it found it: Ctrl-C
during a download from a stalled S3 service leaves no temporary file, and an
obstacle anywhere in the destination is refused before the first file is written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import randbytes
from mountutil import cli, wait_for
from s3proxy import proxy  # noqa: F401 (fixture)
from s3server import moto_server, s3_server  # noqa: F401 (fixtures)

from artifactfs.registry.manifest import CHUNK_SIZE

TIMEOUT = 6.0  # $ARTIFACTFS_S3_TIMEOUT: one request, retries included


def _temporaries(dest: Path) -> list[str]:
    return [str(p) for p in dest.rglob(".artifactfs-*")]


@pytest.mark.parametrize("sig, last_line", [(signal.SIGINT, "Error: interrupted"),
                                             (signal.SIGTERM, "Error: terminated")])
def test_ctrl_c_during_get_leaves_no_temporary_file(proxy, s3_server, tmp_path, monkeypatch, sig,
                                                    last_line) -> None:
    """Ctrl-C or SIGTERM, even while a worker is stuck on a stalled service, and
    even when the signal comes twice (as `timeout` sends it)."""
    monkeypatch.setenv("ARTIFACTFS_S3_TIMEOUT", str(TIMEOUT))
    url = s3_server.new_bucket_url()
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(randbytes(3 * CHUNK_SIZE))
    cli("--store", url, "put", str(src), "ds", "--type", "dataset", env=dict(os.environ), check=True)
    proxy.hang_on = ("GET", "/blobs/")  # the first blob GET stalls the service: the file is begun, never done
    dest = tmp_path / "dest"
    get = subprocess.Popen([sys.executable, "-m", "artifactfs", "--store", url, "get", "ds", str(dest)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _temporaries(dest), timeout=60, what="get to begin writing big.bin")
        get.send_signal(sig)  # the worker is stuck in a GET: the waiting thread removes its file
        wait_for(lambda: not _temporaries(dest), timeout=TIMEOUT / 2, what="the temporary file to go at once")
        get.send_signal(sig)  # a second Ctrl-C (or `timeout`, which signals twice) cuts the wait short
        _, err = get.communicate(timeout=4 * TIMEOUT)
    finally:
        get.kill()
    # 128 + sig from our handler; -sig when the second signal lands once Python's exit has
    # restored the default action (a shell shows both as 128 + sig)
    assert get.returncode in (128 + sig, -sig), err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == last_line, err
    assert _temporaries(dest) == [] and not (dest / "big.bin").exists()


def test_an_obstacle_is_refused_before_anything_is_written(tmp_path) -> None:
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "z").mkdir()
    (src / "a" / "first.txt").write_text("first\n")
    (src / "z" / "last.txt").write_text("last\n")
    cli("--store", store, "put", str(src), "ds", "--type", "dataset", check=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "z")  # the last folder in path order is a symlink out of dest
    done = cli("--store", store, "get", "ds", str(dest))
    assert done.returncode == 1 and "z is not a directory" in done.stderr, done.stderr
    assert sorted(os.listdir(dest)) == ["z"] and os.listdir(elsewhere) == []  # a/first.txt not written either
