"""How the command line ends when its reader goes away: quietly, as cat and ls do."""
from __future__ import annotations

import os
import subprocess
import sys



def test_closed_pipe_ends_quietly(tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(4000):  # `files` prints > 64 KiB, more than a pipe holds
        (src / f"file-with-a-longish-name-{i:05d}.txt").write_text(str(i))
    env = dict(os.environ, ARTIFACTFS_STORE=str(tmp_path / "store"), ARTIFACTFS_PROJECT="p")
    subprocess.run([sys.executable, "-m", "artifactfs", "put", str(src), "many", "--type", "t"],
                   env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "artifactfs", "files", "many:latest"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) != 0
    assert err == ""
