"""The mount's life: bad input, refresh of versions and aliases, unmount with
open files, fusermount3 and signals, systemd readiness and the unit file."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import randbytes, skip_or_fail
from mountutil import cli, force_unmount, gone, is_mounted, mount_factory, mounted, need_fuse, wait_for  # noqa: F401
from test_mount_read import PROJECT, commit

from artifactfs.registry.manifest import walk
from artifactfs.registry.versions import Registry

UNIT = os.path.join(os.path.dirname(__file__), "..", "systemd", "artifactfs@.service")


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    Registry.open(url, create=True)
    commit(url, "ds", str(tmp_path / "src"), {"a.txt": b"v0\n", "big.bin": randbytes(3 << 20)})
    return url


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def _one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_is_one_line_exit_1(store, tmp_path):
    need_fuse()
    env = _env(tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "file").write_text("x")
    cases = [
        (["--store", store, "mount", str(tmp_path / "missing")], "does not exist"),
        (["--store", store, "mount", str(full)], "not empty"),
        (["--store", str(tmp_path / "notastore"), "mount", str(tmp_path / "empty")], "store"),
        (["--store", str(tmp_path / "nothing-here"), "mount", "--read-only", str(tmp_path / "empty")],
         "no artifactfs store"),
        (["--store", "ftp://host/x", "mount", str(tmp_path / "empty")], "scheme"),
        (["--store", store, "mount", "--cache-size", "lots", str(tmp_path / "empty")], "size"),
        (["umount", str(tmp_path / "empty")], "not an artifactfs mount"),
    ]
    for args, needle in cases:
        _one_line_error(cli(*args, env=env), needle)
    assert not is_mounted(str(tmp_path / "empty"))
    assert not os.path.exists(tmp_path / "nothing-here")


def test_a_writable_mount_creates_a_missing_store(tmp_path):
    """A fresh machine's first run: mount, mkdir, write, sync."""
    store = tmp_path / "fresh" / "store"
    with mounted(str(store), tmp_path / "mnt") as m:
        assert os.listdir(m.path) == []
        os.mkdir(m.p("notes"))
        with open(m.p("notes", "draft", "hello.txt"), "w") as f:
            f.write("first")
        done = cli("sync", m.p("notes"), env=m.env, timeout=120)
        assert done.returncode == 0 and done.stdout.split() == ["notes:v0"], done.stderr
    assert Registry.open(str(store)).latest("proj", "notes") == 0


def test_a_created_store_is_announced_once(tmp_path):
    """A mistyped --store must not pass unnoticed: the mount that creates a store says so."""
    need_fuse()
    store, mnt = tmp_path / "typo" / "store", tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    for expected in ("created a new, empty store at", ""):
        done = cli("--store", str(store), "mount", str(mnt), env=env)
        try:
            assert done.returncode == 0, done.stderr
            assert done.stderr.startswith(expected) and (str(store) in done.stderr) == bool(expected), done.stderr
        finally:
            assert cli("umount", str(mnt), env=env).returncode == 0


def test_mount_table_and_already_mounted(store, tmp_path, mount_factory):
    m = mount_factory(store)
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == m.path)
    fstype, source = line.split(" - ")[1].split()[:2]
    assert (fstype, source) == ("fuse.artifactfs", "artifactfs")
    assert "allow_other" not in line
    _one_line_error(cli("--store", store, "mount", m.path, env=m.env), "already an artifactfs mount")
    st = os.stat(os.path.join(os.path.dirname(m.path), ".state-mnt", "artifactfs"))
    assert st.st_mode & 0o777 == 0o700


def test_new_versions_and_moving_aliases_appear_within_refresh(store, tmp_path, mount_factory):
    m = mount_factory(store, "--refresh", "1")
    ds = m.p("ds")
    assert os.readlink(os.path.join(ds, "ds:latest")) == "ds:v0"
    link_ino = os.lstat(os.path.join(ds, "ds:latest")).st_ino
    os.listdir(ds)
    commit(store, "ds", str(tmp_path / "src"), {"a.txt": b"v1\n"})
    took = wait_for(lambda: os.readlink(os.path.join(ds, "ds:latest")) == "ds:v1", 60, "latest -> v1")
    assert took <= 5  # --refresh 1, with room for a loaded machine (a missing refresh never gets here)
    # a link inode keeps its target (the kernel caches it): the moved alias is a new inode
    assert os.lstat(os.path.join(ds, "ds:latest")).st_ino != link_ino
    assert "ds:v1" in os.listdir(ds)
    with open(os.path.join(ds, "ds:latest", "a.txt"), "rb") as f:
        assert f.read() == b"v1\n"
    reg = Registry.open(store)
    reg.set_alias(PROJECT, "ds", "prod", 0)
    wait_for(lambda: os.path.islink(os.path.join(ds, "ds:prod")), 60, "ds:prod to appear")
    assert os.readlink(os.path.join(ds, "ds:prod")) == "ds:v0"
    reg.set_alias(PROJECT, "ds", "prod", 1)
    wait_for(lambda: os.readlink(os.path.join(ds, "ds:prod")) == "ds:v1", 60, "ds:prod to move")
    reg.set_alias(PROJECT, "ds", "prod", None)
    wait_for(lambda: not os.path.lexists(os.path.join(ds, "ds:prod")), 60, "ds:prod to go")
    commit(store, "other", str(tmp_path / "src"), {"o": b"o"})
    wait_for(lambda: "other" in os.listdir(m.path), 60, "a new collection")
    # the aliases xattr of a version follows too
    wait_for(lambda: os.getxattr(os.path.join(ds, "ds:v0"), "user.artifact.aliases") == b"", 60, "xattr")



def test_a_moved_alias_the_kernel_holds_without_its_name_logs_no_error(store, tmp_path, mount_factory):
    """The kernel may keep an alias link's inode (here: an O_PATH descriptor) after its
    name was dropped; when that alias moves again there is no name to invalidate (ENOENT
    from the kernel), which is no error."""
    m = mount_factory(store, "--refresh", "1")
    commit(store, "ds", str(tmp_path / "src"), {"a.txt": b"v1\n"})
    ds, reg = m.p("ds"), Registry.open(store)

    def move(n: int) -> None:  # and wait until the mount has seen it, without looking the link up
        reg.set_alias(PROJECT, "ds", "best", n)
        def seen() -> bool:
            assert not os.path.lexists(os.path.join(ds, "ds:nope"))  # a miss: the collection is listed again
            return b"best" in os.getxattr(os.path.join(ds, f"ds:v{n}"), "user.artifact.aliases").split(b",")
        wait_for(seen, 60, f"best -> v{n}")

    move(0)
    assert os.readlink(os.path.join(ds, "ds:best")) == "ds:v0"
    fd = os.open(os.path.join(ds, "ds:best"), os.O_PATH | os.O_NOFOLLOW)  # holds the link inode of best -> v0
    try:
        move(1)  # drops the name ds:best (the inode stays, held by fd)
        move(0)
        move(1)  # the held inode's name is already gone
    finally:
        os.close(fd)
    assert os.readlink(os.path.join(ds, "ds:best")) == "ds:v1"
    assert m.umount().returncode == 0
    assert "invalidate_entry" not in m.log and "ERROR" not in m.log, m.log

def _run_umount(m, *args: str) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(m.umount(*args)))
    t.start()
    return t, out


def test_umount_with_a_reader_holding_a_file_open(store, tmp_path):
    with mounted(store, tmp_path / "mnt") as m:
        pid = m.pid
        expected = open(os.path.join(tmp_path, "src", "big.bin"), "rb").read()
        f = open(m.p("ds", "ds:v0", "big.bin"), "rb", buffering=0)
        head = f.read(1 << 20)
        t, out = _run_umount(m, "--timeout", "30")
        wait_for(lambda: not is_mounted(m.path), 60, "the mount to be detached")
        assert os.listdir(m.path) == []  # new opens no longer reach the mount...
        assert head + f.read() == expected  # ...but the open file reads to its end
        assert t.is_alive()  # umount waits for the daemon, which serves the open file
        start = time.monotonic()
        f.close()
        t.join(20)
        assert not t.is_alive() and out[0].returncode == 0, out and out[0].stderr
        assert time.monotonic() - start < 10
        assert gone(pid)


def test_umount_timeout_stops_the_daemon_under_a_reader_that_never_closes(store, tmp_path):
    with mounted(store, tmp_path / "mnt") as m:
        pid = m.pid
        f = open(m.p("ds", "ds:v0", "a.txt"), "rb", buffering=0)
        start = time.monotonic()
        done = m.umount("--timeout", "1")
        assert done.returncode == 0, done.stderr
        assert "were still open after 1 s: its daemon was stopped" in done.stderr  # said, not silent
        assert "waiting up to 1 s for the processes still using" in done.stderr
        assert 1 <= time.monotonic() - start < 15
        assert not is_mounted(m.path)
        wait_for(lambda: gone(pid), 60, "the daemon to exit")
        with contextlib.suppress(OSError):  # the OPEN stored the file's pages: a read must ask the daemon
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        with pytest.raises(OSError) as e:
            os.pread(f.fileno(), 10, 0)
        assert e.value.errno in (errno.ENOTCONN, errno.EIO, errno.ECONNABORTED)
        with contextlib.suppress(OSError):  # close() may report the lost connection too
            f.close()


@pytest.mark.parametrize("how", ["fusermount3", "SIGTERM", "SIGINT"])
def test_external_unmount_and_signals_end_the_daemon(store, tmp_path, how):
    with mounted(store, tmp_path / "mnt") as m:
        pid = m.pid
        if how == "fusermount3":
            subprocess.run(["fusermount3", "-u", m.path], check=True)
        else:
            os.kill(pid, getattr(signal, how))
        wait_for(lambda: gone(pid), 60, "the daemon to exit")
        assert not is_mounted(m.path)
        assert "unmounted" in m.log


def test_stale_mount_after_a_crash_is_replaced(store, tmp_path):
    with mounted(store, tmp_path / "mnt") as m:
        pid = m.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), 60, "the kill")
        assert is_mounted(m.path)
        done = cli("--store", store, "--project", PROJECT, "mount", m.path, env=m.env)
        assert done.returncode == 0, done.stderr
        with open(m.p("ds", "ds:v0", "a.txt"), "rb") as f:
            assert f.read() == b"v0\n"


def test_read_only_mount(store, tmp_path, mount_factory):
    m = mount_factory(store, "--read-only")
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == m.path)
    assert "ro" in line.split()[5].split(",")
    assert set(os.listdir(m.p("ds"))) == {"ds:v0", "ds:latest"}
    with pytest.raises(OSError) as e:
        os.mkdir(m.p("new"))
    assert e.value.errno == errno.EROFS


def test_foreground_tells_systemd_ready_and_stopping(store, tmp_path):
    need_fuse()
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**_env(tmp_path), "NOTIFY_SOCKET": sock_path}
    proc = subprocess.Popen([sys.executable, "-m", "artifactfs", "--store", store, "--project", PROJECT,
                             "mount", "--foreground", str(mnt)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sock.recv(4096) == b"READY=1"
        assert os.listdir(mnt / "ds")  # live as soon as READY=1 is sent
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(30) == 0
        assert not is_mounted(str(mnt))
        assert "mounted" in proc.stderr.read()  # --foreground logs to stderr too
    finally:
        if proc.poll() is None:
            proc.kill()
        force_unmount(str(mnt), env)
        sock.close()


def test_make_install_puts_the_cli_where_the_unit_runs_it(tmp_path):
    """`make install`: the CLI in its own venv, linked as BINDIR/artifactfs (the unit's
    /usr/local/bin by default), mount.artifactfs in SBINDIR, the unit in UNITDIR; the installed unit
    passes systemd-analyze verify (`make test` installs systemd-analyze)."""
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze is not installed (make test installs the systemd package)")
    root = os.path.join(os.path.dirname(__file__), "..")
    dirs = {k: str(tmp_path / k.lower()) for k in ("INSTALL_VENV", "BINDIR", "SBINDIR", "UNITDIR")}
    env = {**os.environ, "PIP_CACHE_DIR": os.path.expanduser("~/.cache/pip")}
    done = subprocess.run(["make", "-C", root, "install", *(f"{k}={v}" for k, v in dirs.items())],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    version = subprocess.run([os.path.join(dirs["BINDIR"], "artifactfs"), "--version"], capture_output=True,
                             text=True, env=env)
    assert version.returncode == 0 and "artifactfs" in version.stdout, version.stderr
    for name in ("mount.artifactfs", "mount.fuse.artifactfs"):  # -t artifactfs, -t fuse.artifactfs (/proc/mounts)
        helper = subprocess.run([os.path.join(dirs["SBINDIR"], name)], capture_output=True, text=True)
        assert helper.returncode != 0 and "usage" in helper.stderr.lower(), helper.stderr
    with open(UNIT) as f:
        text = f.read()
    assert "Type=notify" in text and "ExecStop=/usr/local/bin/artifactfs umount %f" in text
    unit = os.path.join(dirs["UNITDIR"], "artifactfs@.service")
    with open(unit) as f:
        assert f.read() == text.replace("/usr/local/bin/artifactfs", os.path.join(dirs["BINDIR"], "artifactfs"))
    instance = os.path.join(dirs["UNITDIR"], "artifactfs@mnt-af.service")
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", instance], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    os.remove(os.path.join(dirs["BINDIR"], "artifactfs"))
    bad = subprocess.run(["systemd-analyze", "verify", "--man=no", instance], capture_output=True, text=True)
    assert bad.returncode != 0 and "artifactfs" in bad.stderr  # the check can fail


def test_fstab_helper(store, tmp_path):
    need_fuse()
    env = _env(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    helper = [sys.executable, "-m", "artifactfs.cli.fstab"]
    bad = subprocess.run(helper + [store, str(mnt), "-o", "rw,bogus=1"], capture_output=True, text=True, env=env)
    _one_line_error(bad, "unknown option 'bogus=1'")
    from artifactfs.cli.fstab import translate  # every flag of `artifactfs mount`, and the endpoint
    assert translate("s3://b", "/m", "send_opens,cache_size=5G,endpoint=http://h:9000,ro,_netdev") == [
        "--store", "s3://b", "--endpoint-url", "http://h:9000", "mount", "--send-opens", "--cache-size", "5G",
        "--read-only", "/m"]
    assert translate("/s", "/m", "default_permissions,comment=team data,x-systemd.requires=net.target") == [
        "--store", "/s", "mount", "/m"]  # mount(8)'s, systemd's and FUSE's own, not ours
    fake = subprocess.run(helper + [store, str(mnt), "-fv", "-o", f"project={PROJECT}"], capture_output=True,
                          text=True, env=env, timeout=60)  # mount -f: options checked, nothing mounted
    assert fake.returncode == 0 and not is_mounted(str(mnt)), fake.stderr
    try:
        done = subprocess.run(helper + [store, str(mnt), "-n", "-o", f"project={PROJECT},ro,_netdev,refresh=1,"
                                        f"cache_dir={tmp_path / 'cache'},x-systemd.automount"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        with open("/proc/self/mountinfo") as f:
            line = next(ln for ln in f if ln.split()[4] == str(mnt))
        assert "ro" in line.split()[5].split(",")
        assert sorted(os.listdir(mnt / "ds" / "ds:v0")) == ["a.txt", "big.bin"]
        assert cli("umount", str(mnt), env=env).returncode == 0
    finally:
        force_unmount(str(mnt), env)


def test_one_state_dir_two_mount_namespaces_same_mountpoint_path(store, tmp_path):
    """Containers (or machines sharing a home on NFS) that share one state dir and
    mount at the same path are two mounts: each sync reaches its own daemon, and
    umount stops its own.  Before, the second daemon took over the first one's
    control socket, mount record and log, so the first mount's sync committed the
    other's draft."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        skip_or_fail("unshare and nsenter (util-linux) are needed")
    env = _env(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "host.txt"), "wb") as f:
            f.write(b"host")
        cmd = [sys.executable, "-m", "artifactfs", "--store", store, "--project", PROJECT]
        script = ("set -e; umount -l \"$1\"; \"${@:2}\" mount \"$1\"; echo ns > \"$1/ds/draft/ns.txt\"; "
                  "python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], \"user.artifactfs.pid\").decode())' \"$1\"")
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "-",
                               m.path, *cmd], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        other = int(done.stdout.split()[-1])
        try:
            assert other != m.pid
            assert cli("sync", m.p("ds", "draft"), env=env, check=True).stdout == "ds:v1\n"
            reg = Registry.open(store)

            def paths(n: int) -> list[str]:
                return sorted(p for p, _ in walk(reg, reg.version(PROJECT, "ds", n).root))
            assert paths(1) == ["a.txt", "big.bin", "host.txt"]
            inside = subprocess.run(["nsenter", "-t", str(other), "-m", *cmd, "sync", m.p("ds", "draft")],
                                    capture_output=True, text=True, env=env, timeout=120)
            assert inside.returncode == 0 and inside.stdout == "ds:v2\n", inside.stderr
            assert paths(2) == ["a.txt", "big.bin", "host.txt", "ns.txt"]
            gone_ = subprocess.run(["nsenter", "-t", str(other), "-m", *cmd, "umount", m.path],
                                   capture_output=True, text=True, env=env, timeout=120)
            assert gone_.returncode == 0, gone_.stderr
            wait_for(lambda: gone(other), 60, "the other namespace's daemon to exit")
            assert gone(other) and not gone(m.pid) and is_mounted(m.path)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)


def test_a_failed_mount_gives_the_cause_and_the_log(store, tmp_path):
    """Where /dev/fuse is missing (a mount namespace with an empty /dev), the one
    line names libfuse's own reason and the log's path, not just
    'fuse_session_mount failed (see the log)'."""
    need_fuse()
    if shutil.which("unshare") is None:
        skip_or_fail("unshare (util-linux) is needed")
    env = _env(tmp_path)
    (tmp_path / "mnt").mkdir()
    script = 'set -e; mount -t tmpfs none /dev; mknod -m 666 /dev/null c 1 3; exec "${@:2}" mount "$1"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "-",
                           str(tmp_path / "mnt"), sys.executable, "-m", "artifactfs", "--store", store],
                          capture_output=True, text=True, env=env, timeout=120)
    _one_line_error(done, "cannot mount on", "fuse: device not found", "(log: ")
    log = done.stderr.strip().rpartition("(log: ")[2].rstrip(")")
    assert "device not found" in open(log).read()


def test_a_store_the_user_may_not_read_says_permission_denied(store, tmp_path):
    """Root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH is held to the modes,
    as any other user is."""
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is needed")
    os.chmod(store, 0)
    try:
        done = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable,
                               "-m", "artifactfs", "--store", store, "ls"],
                              capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    finally:
        os.chmod(store, 0o755)
    _one_line_error(done, "cannot read the store", "permission denied")
    assert "not an artifactfs store" not in done.stderr


def test_the_log_is_reopened_after_logrotate_moved_it(store, mount_factory):
    m = mount_factory(store)
    logs = os.path.join(m.env["XDG_STATE_HOME"], "artifactfs", "logs")
    (name,) = os.listdir(logs)
    os.rename(os.path.join(logs, name), os.path.join(logs, name + ".1"))
    with open(m.p("ds", "draft", "new"), "wb") as f:
        f.write(b"n")
    assert cli("sync", m.p("ds", "draft"), env=m.env, timeout=120).returncode == 0
    wait_for(lambda: os.path.exists(os.path.join(logs, name)), 30, "a new log file")
    st = os.stat(os.path.join(logs, name))
    assert st.st_mode & 0o777 == 0o600
    with open(os.path.join(logs, name)) as f:
        assert "committed ds:v1" in f.read()


def test_umount_kills_a_daemon_that_does_not_stop_and_aborts_its_connection(store, tmp_path):
    """A daemon that does not exit after SIGTERM (stuck; here SIGSTOPped once
    umount has detached the mount, while a file is still open) is killed after
    --stop-timeout and its FUSE connection aborted, and umount says so: before,
    umount gave up and left the daemon, and every program waiting on it, hanging."""
    with mounted(store, tmp_path / "mnt") as m:
        pid = m.pid
        held = open(m.p("ds", "ds:v0", "a.txt"), "rb", buffering=0)  # keeps the daemon serving after detach
        out: list[subprocess.CompletedProcess] = []
        t = threading.Thread(target=lambda: out.append(m.umount("--timeout", "5", "--stop-timeout", "1")))
        t.start()
        wait_for(lambda: not is_mounted(m.path), 60, "umount to detach the mount")
        os.kill(pid, signal.SIGSTOP)
        t.join(90)
        held.close()
        assert not t.is_alive() and out[0].returncode == 1
        assert "did not stop within 1 s of SIGTERM: killed it and aborted its FUSE connection" in out[0].stderr
        wait_for(lambda: gone(pid), 30, "the daemon to exit")
