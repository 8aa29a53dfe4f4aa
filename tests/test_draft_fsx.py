"""fsx, the file system exerciser of xfstests, inside draft/: random
reads, writes, truncations and fallocates checked against fsx's in-memory model,
on a file of the base version and on a new file; 10,000 operations without mmap,
5,000 with mmap, 500 closing and reopening after each operation.

fsx is built from ../shared/tools/fsx next to the repository (CI puts a copy of
shared/ beside its clone; a worktree finds it further up).  Missing in CI is a
failure, not a skip."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import randbytes, skip_or_fail
from draft_helpers import publish
from mountutil import mounted

from artifactfs.registry.versions import Registry

REPO = Path(__file__).resolve().parent.parent
RUNS = {"no-mmap": ["-N", "10000", "-R", "-W"], "mmap": ["-N", "5000"], "reopen": ["-N", "500", "-c", "1"]}


def _fsx_sources() -> Path | None:
    for top in REPO.parents:
        found = top / "shared" / "tools" / "fsx" / "build.sh"
        if found.exists():
            return found
    return None


@pytest.fixture(scope="module")
def fsx(tmp_path_factory) -> str:
    build = _fsx_sources()
    if build is None:
        skip_or_fail("fsx sources not found: shared/tools/fsx beside the repository")
    out = str(tmp_path_factory.mktemp("fsx") / "fsx")
    subprocess.run(["bash", str(build), out], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def mount(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsxmount")
    store = str(tmp / "store")
    publish(Registry.open(store, create=True), str(tmp / "pub"), "ds",
            {f"{run}.base": randbytes(300_000) for run in RUNS})
    with mounted(store, tmp / "mnt") as m:
        yield m


@pytest.mark.parametrize("kind", ["base", "new"])
@pytest.mark.parametrize("run", sorted(RUNS))
def test_fsx(fsx, mount, run, kind):
    path = mount.p("ds", "draft", f"{run}.{kind}")
    assert os.path.exists(path) == (kind == "base")
    done = subprocess.run([fsx, *RUNS[run], "-S", "7", "-q", path], capture_output=True, text=True,
                          timeout=1800, cwd=os.path.dirname(path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
