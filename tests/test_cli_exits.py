"""How the command line ends when its reader goes away or Ctrl-C comes: quietly, as cat and ls do."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest


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


# Runs the CLI as `python -m artifactfs` does, after arranging that the process
# gets SIGINT the moment it starts to import module sys.argv[1]: a Ctrl-C that
# certainly lands among the imports that run before click does.
_INTERRUPT_AT_IMPORT = """
import os, runpy, signal, sys
target = sys.argv.pop(1)
class Interrupt:
    def find_spec(self, name, path=None, target_=None):
        if name == target:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv[0] = "artifactfs"
runpy.run_module("artifactfs", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module, command", [
    ("click", ["ls"]),
    ("artifactfs.registry.versions", ["ls"]),
    ("artifactfs.api.artifact", ["ls"]),
    ("artifactfs.cli.drafts", ["sync", "/nonexistent"]),
])
def test_ctrl_c_during_the_imports_is_one_line(tmp_path, module, command):
    env = dict(os.environ, ARTIFACTFS_STORE=str(tmp_path / "store"))
    p = subprocess.run([sys.executable, "-c", _INTERRUPT_AT_IMPORT, module, *command], env=env,
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr, p.stdout) == (130, "Error: interrupted\n", "")

