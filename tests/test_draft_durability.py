"""Nothing written to a draft is ever lost: unmount (every way) commits, a daemon
killed with SIGKILL during writes or during a commit leaves the draft as it was
for the next mount, and two mounts committing to one collection lose nothing."""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import randbytes, tmpfs
from core_util import check_version_complete
from draft_helpers import dir_files, publish, version_files
from mountutil import cli, kill_daemon, mounted, wait_for

from artifactfs.registry.manifest import CHUNK_SIZE
from artifactfs.registry.versions import Registry

BASE = {"keep/a": b"a", "keep/b": (b"b" * 3000, True), "old/f": b"old"}


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    publish(Registry.open(url, create=True), str(tmp_path / "pub"), "ds", BASE)
    return url


def env_for(tmp_path, name: str = "state") -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / name)}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("how", ["artifactfs umount", "fusermount3 -u", "SIGTERM"])
def test_close_then_immediate_unmount_commits(store, tmp_path, how):
    env = env_for(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "written.bin"), "wb") as f:
            f.write(b"w" * 100_000)
        os.chmod(m.p("ds", "draft", "keep", "a"), 0o755)
        pid = m.pid
        if how == "artifactfs umount":  # commits through the control socket first, and says so
            done = m.umount()
            assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
        elif how == "fusermount3 -u":
            subprocess.run(["fusermount3", "-u", m.path], check=True)
        else:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: _zombie(pid), 30, "the daemon to commit and exit")
    reg = Registry.open(store)
    assert reg.versions("proj", "ds") == [0, 1]
    files = version_files(reg, "ds", 1)
    assert files["written.bin"] == (b"w" * 100_000, False) and files["keep/a"] == (b"a", True)
    if how != "artifactfs umount":
        assert "at unmount: ds:v1" in m.log


WRITER = r"""
import os, sys
d = sys.argv[1]
i = 0
while True:
    try:
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(bytes([i % 251]) * (1000 + i))
        if i % 7 == 0:
            fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, f"{i}\n".encode())
            os.fsync(fd)
            os.close(fd)
    except OSError:
        break
    print(i, flush=True)
    i += 1
"""


def test_sigkill_during_writes_loses_nothing_closed(store, tmp_path):
    env = env_for(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        d = m.p("ds", "draft", "out")
        os.mkdir(d)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, d], stdout=subprocess.PIPE, text=True)
        done = [int(writer.stdout.readline()) for _ in range(150)]
        kill_daemon(m)
        # (through the same buffered reader: communicate(timeout=...) reads the pipe itself and
        # misses the lines readline() had already buffered, which made `closed` too small)
        rest = writer.stdout.read().split()
        writer.wait(timeout=30)
        closed = done[-1] + len(rest)
    with mounted(store, tmp_path / "mnt", env=env) as m:  # the same store and project
        d = m.p("ds", "draft", "out")
        names = sorted(n for n in os.listdir(d) if n.startswith("f"))
        assert len(names) >= closed + 1 >= 150
        for i in range(closed + 1):
            assert open(os.path.join(d, f"f{i:05d}"), "rb").read() == bytes([i % 251]) * (1000 + i)
        logged = open(os.path.join(d, "log")).read().split()
        # the last one may be in even if its fsync failed as the daemon died: it was written
        assert logged == [str(i) for i in range(0, closed + 2, 7)][:len(logged)]
        assert len(logged) >= closed // 7
        want = dir_files(m.p("ds", "draft"))
        assert cli("sync", m.p("ds"), env=env).stdout == "ds:v1\n"
    assert version_files(Registry.open(store), "ds", 1) == want


def test_sigkill_during_a_commit(store, tmp_path):
    """A sync interrupted by SIGKILL of the daemon: no version or a complete one,
    the draft intact on the next mount, and its sync gives exactly the content."""
    env = env_for(tmp_path)
    rng = random.Random(7)
    want = None
    outcomes = []
    for attempt in range(4):
        with mounted(store, tmp_path / "mnt", env=env) as m:
            d = m.p("ds", "draft")
            if want is None:  # the first round writes the draft; later rounds only kill
                for i in range(120):
                    os.makedirs(f"{d}/big/{i % 6}", exist_ok=True)
                    with open(f"{d}/big/{i % 6}/{i}", "wb") as f:
                        f.write(randbytes(150_000))
                os.rename(f"{d}/old", f"{d}/renamed")
                want = dir_files(d)
            before = Registry.open(store).versions("proj", "ds")
            sync = subprocess.Popen([sys.executable, "-m", "artifactfs", "sync", d], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            blobs = _blob_count(store)
            wait_for(lambda: _blob_count(store) > blobs or sync.poll() is not None, 30, "the commit to start")
            time.sleep(rng.uniform(0, 0.15))  # the commit is under way: kill it somewhere
            kill_daemon(m)
            out, _ = sync.communicate(timeout=30)
        reg = Registry.open(store)
        versions = reg.versions("proj", "ds")
        assert versions in (before, before + [before[-1] + 1])
        for n in versions:
            check_version_complete(reg, "proj", "ds", n)
        if versions != before:
            assert version_files(reg, "ds", versions[-1]) == want
        outcomes.append((out.strip(), versions))
        if versions != before:
            break
    with mounted(store, tmp_path / "mnt", env=env) as m:
        assert dir_files(m.p("ds", "draft")) == want, "the draft is as it was"
        line = cli("sync", m.p("ds", "draft"), env=env).stdout.strip()
    reg = Registry.open(store)
    latest = reg.latest("proj", "ds")
    assert line in (f"ds:v{latest}", f"ds:v{latest} (unchanged)") and latest == 1, outcomes
    assert version_files(reg, "ds", 1) == want


def test_sigkill_while_chunks_are_stored_ahead(store, tmp_path):
    """A daemon killed while it copies the chunks of a big closed file into the
    store ahead of any commit: no version, the file whole in the draft on the next
    mount, and its sync publishes exactly it (the chunks stored already are found
    present; a copy cut short is never under a key)."""
    env = env_for(tmp_path)
    payload = randbytes(3 * CHUNK_SIZE + 4321)
    blobs = _blob_count(store)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "model.bin"), "wb") as f:
            f.write(payload)
        wait_for(lambda: _blob_count(store) > blobs, 60, "a chunk stored ahead")
        kill_daemon(m)
    reg = Registry.open(store)
    assert reg.versions("proj", "ds") == [0]
    with mounted(store, tmp_path / "mnt", env=env) as m:
        assert open(m.p("ds", "draft", "model.bin"), "rb").read() == payload
        assert cli("sync", m.p("ds", "draft"), env=env).stdout == "ds:v1\n"
    check_version_complete(reg, "proj", "ds", 1)
    assert version_files(reg, "ds", 1)["model.bin"] == (payload, False)


def test_sigkill_in_the_middle_of_a_big_file_keeps_every_answered_write(store, tmp_path):
    """A daemon killed while a big file is still open for writing, staged one file
    per chunk (two sealed, some linked into the store, a tail): the next mount
    joins the pieces and shows every byte whose write was answered, and its sync
    publishes exactly that."""
    env = env_for(tmp_path)
    payload = randbytes(2 * CHUNK_SIZE + 3 * (1 << 20))
    with mounted(store, tmp_path / "mnt", env=env) as m:
        fd = os.open(m.p("ds", "draft", "partial.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for off in range(0, len(payload), 1 << 20):
                assert os.write(fd, payload[off:off + (1 << 20)]) == 1 << 20
            data = glob.glob(os.path.join(env["XDG_STATE_HOME"], "artifactfs", "drafts", "*", "proj", "*", "ds",
                                          "data"))[0]
            assert sorted(n.partition(".")[2] for n in os.listdir(data)) == ["c0", "c1", "t"]
            kill_daemon(m)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass  # (the mount is gone)
    assert Registry.open(store).versions("proj", "ds") == [0]
    with mounted(store, tmp_path / "mnt", env=env) as m:
        assert sorted(n for n in os.listdir(data) if "." in n) == [], "joined into one data file"
        assert open(m.p("ds", "draft", "partial.bin"), "rb").read() == payload
        assert cli("sync", m.p("ds", "draft"), env=env).stdout == "ds:v1\n"
    assert version_files(Registry.open(store), "ds", 1)["partial.bin"] == (payload, False)


def _blob_count(store: str) -> int:
    return sum(len(files) for _, _, files in os.walk(os.path.join(store, "blobs")))


SYNCER = r"""
import os, subprocess, sys
d, who, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(rounds):
    with open(os.path.join(d, f"{who}-{i}"), "wb") as f:
        f.write(f"{who} {i}".encode())
    with open(os.path.join(d, "shared"), "wb") as f:
        f.write(f"{who} {i}".encode())
    done = subprocess.run([sys.executable, "-m", "artifactfs", "sync", d], capture_output=True, text=True)
    print("OUT", done.returncode, done.stdout.strip(), done.stderr.strip(), flush=True)
    if done.returncode:  # a conflict on 'shared': take theirs (the version's bytes) and retry
        latest = os.path.join(os.path.dirname(d), os.readlink(os.path.join(os.path.dirname(d), "ds:latest")))
        for attempt in range(20):
            with open(os.path.join(d, "shared"), "wb") as f:
                f.write(open(os.path.join(latest, "shared"), "rb").read())
            again = subprocess.run([sys.executable, "-m", "artifactfs", "sync", d], capture_output=True, text=True)
            print("OUT", again.returncode, again.stdout.strip(), again.stderr.strip(), flush=True)
            if again.returncode == 0:
                break
"""


def test_two_mounts_commit_to_one_collection(store, tmp_path):
    env = env_for(tmp_path)  # one user, one state dir: each mount claims its own drafts slot
    rounds = 4
    with mounted(store, tmp_path / "m1", "--refresh", "0.2", env=env) as m1, \
            mounted(store, tmp_path / "m2", "--refresh", "0.2", env=env) as m2:
        procs = [subprocess.Popen([sys.executable, "-c", SYNCER, m.p("ds", "draft"), who, str(rounds)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for m, who in ((m1, "p"), (m2, "q"))]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
    lines = [ln for out, _ in outs for ln in out.splitlines()]
    made = [ln.split()[2] for ln in lines if ln.startswith("OUT 0 ") and "unchanged" not in ln]
    assert len(made) == len(set(made)), "distinct versions"
    conflicts = [ln for ln in lines if ln.startswith("OUT 1 ")]
    assert all("shared" in ln for ln in conflicts), conflicts
    reg = Registry.open(store)
    final = version_files(reg, "ds", reg.latest("proj", "ds"))
    for who in "pq":
        for i in range(rounds):
            assert final[f"{who}-{i}"] == (f"{who} {i}".encode(), False), "no change lost"
    for n in reg.versions("proj", "ds"):
        check_version_complete(reg, "proj", "ds", n)


def test_a_draft_that_cannot_commit_at_unmount_is_kept(store, tmp_path):
    env = env_for(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        with open(m.p("ds", "draft", "keep", "a"), "wb") as f:
            f.write(b"mine")
        publish(Registry.open(store), str(tmp_path / "pub"), "ds", {"keep/a": b"theirs"})
        done = m.umount()
        assert done.returncode == 1 and "ds: conflict" in done.stderr and "stay on disk" in done.stderr, done.stderr
    assert "conflict" in m.log and "kept for the next mount" in m.log
    assert Registry.open(store).versions("proj", "ds") == [0, 1]
    with mounted(store, tmp_path / "mnt", env=env) as m:
        assert open(m.p("ds", "draft", "keep", "a"), "rb").read() == b"mine"
        with open(m.p("ds", "draft", "keep", "a"), "wb") as f:
            f.write(b"theirs")  # resolved
        with open(m.p("ds", "draft", "more"), "wb") as f:
            f.write(b"more")
        assert cli("sync", m.p("ds"), env=env).stdout == "ds:v2\n"
    assert version_files(Registry.open(store), "ds", 2)["keep/a"] == (b"theirs", False)


def test_a_draft_that_cannot_be_recovered_for_lack_of_space_does_not_stop_the_mount(tmp_path):
    """After a crash, a big file staged one file per chunk is joined again at the
    next start: a copy.  With the disk too full for it, that one draft gives
    ENOSPC (its files stay as they are), and the mount still starts and serves
    everything else; once there is room, the draft opens with every byte."""
    with tmpfs(tmp_path / "fs", "128m") as fs:
        store = str(fs / "store")
        publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", BASE)
        env = {**os.environ, "XDG_STATE_HOME": str(fs / "state")}
        payload = randbytes(2 * CHUNK_SIZE + 3 * (1 << 20))
        with mounted(store, tmp_path / "mnt", env=env) as m:
            with open(m.p("ds", "draft", "partial.bin"), "wb") as f:
                f.write(payload)
            os.mkdir(m.p("fresh"))  # a new collection, only a draft so far
            with open(m.p("fresh", "draft", "partial.bin"), "wb") as f:
                f.write(payload[:CHUNK_SIZE + 1])
            kill_daemon(m)
        st = os.statvfs(fs)
        filler = fs / "filler"
        with open(filler, "wb") as f:
            f.truncate(st.f_bavail * st.f_frsize - (4 << 20))
            os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - (4 << 20))
        with mounted(store, tmp_path / "mnt", env=env) as m:
            assert sorted(os.listdir(m.p("ds", "ds:v0"))) == sorted({p.split("/")[0] for p in BASE})
            assert sorted(os.listdir(m.path)) == ["ds", "fresh"]  # (the new one was not listed at all)
            for name in ("ds", "fresh"):
                with pytest.raises(OSError) as e:
                    os.listdir(m.p(name, "draft"))
                assert e.value.errno == errno.ENOSPC
                assert f"the draft of {name} could not be opened" in m.log
            os.unlink(filler)
            assert open(m.p("ds", "draft", "partial.bin"), "rb").read() == payload
            assert cli("sync", m.p("ds", "draft"), env=env).stdout == "ds:v1\n"
            assert open(m.p("fresh", "draft", "partial.bin"), "rb").read() == payload[:CHUNK_SIZE + 1]
        assert version_files(Registry.open(store), "ds", 1)["partial.bin"] == (payload, False)


def test_a_full_state_dir_can_still_be_emptied(tmp_path):
    """Writes into a draft fill the state dir's filesystem.  Removing a staged
    file is a meta.db transaction: before the reserve (drafts/reserve.py) every
    `rm` failed with ENOSPC, and so did the sync that would have freed room.
    Now `rm` and `sync` work, creating a file still gets ENOSPC (it takes room),
    and the reserve is made again once there is room."""
    with tmpfs(tmp_path / "fs", "40m") as fs:
        store = str(tmp_path / "store")
        publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", BASE)
        env = {**os.environ, "XDG_STATE_HOME": str(fs / "state")}
        with mounted(store, tmp_path / "mnt", env=env) as m:
            reserves = glob.glob(str(fs / "state" / "**" / "reserve"), recursive=True)
            assert len(reserves) == 1 and os.stat(reserves[0]).st_size == 8 << 20
            d = m.p("ds", "draft")
            written, told = [], 0
            for i in range(100):
                fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    told = 0  # what write(2) said landed, as dd counts it
                    while told < 1 << 20:
                        told += os.write(fd, randbytes((1 << 20) - told))
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
                finally:
                    os.close(fd)
                written.append(f"f{i}")
            else:
                raise AssertionError("the state dir never filled up")
            failed = f"f{i}"  # (made, and as far as the room went, written)
            assert os.stat(f"{d}/{failed}").st_size == told  # (a failed write had left more than it said)
            with pytest.raises(OSError) as e:
                with open(f"{d}/more", "wb") as f:
                    f.write(randbytes(1 << 20))
            assert e.value.errno == errno.ENOSPC
            status = cli("status", d, env=env)  # it stores nothing, so a full disk does not stop it
            assert status.returncode == 0 and f"A {written[0]}" in status.stdout.splitlines(), status.stderr
            assert "Traceback" not in m.log
            for name in written[:4]:
                os.unlink(f"{d}/{name}")
            assert not os.path.exists(reserves[0])    # given back for the first unlink
            assert "its reserve of 8 MiB is given back" in m.log
            assert cli("sync", d, env=env).stdout == "ds:v1\n"
            for name in [*written[4:], failed]:       # committed; removing them frees their room
                os.unlink(f"{d}/{name}")
            assert cli("sync", d, env=env).stdout == "ds:v2\n"
            wait_for(lambda: os.path.exists(reserves[0]), 30, "the reserve to be made again")
        reg = Registry.open(store)
        assert set(version_files(reg, "ds", 1)) == {*BASE, *written[4:], failed}
        assert set(version_files(reg, "ds", 2)) == set(BASE)


def test_a_failure_to_remove_a_forgotten_file_does_not_stop_the_daemon(tmp_path):
    """When the kernel forgets an unlinked file, its row and data file go in the
    background.  That failing (a full disk before the reserve was made again;
    here a folder where its data file was, the one failure that can be made
    certain) killed the daemon: the error left the nursery.  Now it is logged,
    the mount goes on, and the next start removes the file."""
    store = str(tmp_path / "store")
    publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", BASE)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with mounted(store, tmp_path / "mnt", env=env) as m:
        victim = m.p("ds", "draft", "victim")
        with open(victim, "wb") as f:
            f.write(b"v" * 12345)
        [data] = [p for p in glob.glob(str(tmp_path / "state" / "**" / "data" / "*"), recursive=True)
                  if os.path.getsize(p) == 12345]
        held = os.open(victim, os.O_RDONLY)
        os.unlink(victim)
        os.unlink(data)
        os.mkdir(data)                       # removing it now fails (EISDIR)
        os.close(held)                       # the kernel forgets the inode: FORGET
        wait_for(lambda: "removed file(s) on disk until the next start" in m.log, 30, "the failure to be logged")
        assert os.listdir(m.p("ds", "draft")) == sorted(os.listdir(m.p("ds", "ds:v0")))
        with open(m.p("ds", "draft", "after"), "wb") as f:  # the daemon still serves
            f.write(b"after")
        assert cli("sync", m.p("ds", "draft"), env=env).stdout == "ds:v1\n"


def test_a_draft_changed_when_its_daemon_was_killed_waits_for_an_explicit_sync(tmp_path):
    """A checkpoint is being written when the daemon is killed (or the machine
    stops).  The next mount serves the draft as it was, but its unmount (or a
    systemd stop) used to publish the half-written file as latest, exit 0.  Now
    such a draft is committed only by an explicit sync (or discarded): umount
    names it and exits 1; status says so too."""
    store = str(tmp_path / "store")
    publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", BASE)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with mounted(store, tmp_path / "mnt", env=env) as m:
        fd = os.open(m.p("ds", "draft", "ckpt.pt"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"half of it")
        kill_daemon(m)                          # while it is being written
        with contextlib.suppress(OSError):
            os.close(fd)                        # (ENOTCONN: the mount is gone)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        assert "not committed" not in m.log
        status = cli("status", m.p("ds", "draft"), env=env).stdout
        assert "A ckpt.pt" in status and "note: it was being changed when the mount's daemon stopped" in status
        done = m.umount()
        assert done.returncode == 1
        assert "Error: ds: not committed: it was being changed when the mount's daemon stopped" in done.stderr
    assert Registry.open(store).latest("proj", "ds") == 0
    with mounted(store, tmp_path / "mnt", env=env) as m:  # a clean stop in between: still waiting
        assert "note:" in cli("status", m.p("ds", "draft"), env=env).stdout
        assert cli("sync", m.p("ds", "draft"), env=env).stdout == "ds:v1\n"
        assert "note:" not in cli("status", m.p("ds", "draft"), env=env).stdout
        with open(m.p("ds", "draft", "more"), "wb") as f:
            f.write(b"more")
        done = m.umount()
        assert done.returncode == 0 and done.stdout == "ds:v2\n", done.stderr


def test_umount_waits_for_a_checkpoint_being_written(tmp_path):
    """umount while a program still writes a checkpoint into draft/: it used to
    publish the part written so far as latest.  Now umount's commit waits (up
    to --timeout) for the draft's files open for writing to be closed; if one
    stays open, the draft is not committed, neither by umount nor by the daemon
    as it stops, and the next mount keeps it for an explicit sync."""
    store = str(tmp_path / "store")
    publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", BASE)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with mounted(store, tmp_path / "mnt", env=env) as m:
        f = open(m.p("ds", "draft", "ckpt.pt"), "wb")
        f.write(b"first half ")
        f.flush()
        closer = threading.Timer(1.0, lambda: (f.write(b"second half"), f.close()))
        closer.start()
        done = m.umount("--timeout", "30")
        closer.join()
        assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
    assert version_files(Registry.open(store), "ds", 1)["ckpt.pt"] == (b"first half second half", False)

    with mounted(store, tmp_path / "mnt", env=env) as m:
        fd = os.open(m.p("ds", "draft", "ckpt2.pt"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"partial")
        done = m.umount("--timeout", "1")      # the writer never closes: stopped after 1 s more
        assert done.returncode == 1
        assert "ds: not committed yet: 1 file(s) still open for writing after 1 s" in done.stderr
        with contextlib.suppress(OSError):
            os.close(fd)                        # (ENOTCONN: the daemon was stopped)
    assert Registry.open(store).latest("proj", "ds") == 1
    with mounted(store, tmp_path / "mnt", env=env) as m:
        assert open(m.p("ds", "draft", "ckpt2.pt"), "rb").read() == b"partial"
        assert "note: it was left unpublished when the mount was stopped by `artifactfs umount`" in \
            cli("status", m.p("ds", "draft"), env=env).stdout
        assert m.umount().returncode == 1       # still waits for an explicit sync
