"""`artifactfs sync` never publishes a file still being written: it waits (up to
--timeout) for the draft's files open for writing that changed since they were
opened to be closed, else publishes nothing of that draft and exits 1 naming
them.  A sync of the whole mountpoint skips drafts recovered after a crash.
What umount and the next mount's status say about a draft left unpublished."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import mmap
import os
import threading

from draft_helpers import publish, version_files
from mountutil import cli, force_unmount, kill_daemon, mounted

from artifactfs.registry.versions import Registry

BASE = {"keep/a": b"a" * 4096, "old/f": b"old"}


def _store(tmp_path) -> tuple[str, dict[str, str]]:
    store = str(tmp_path / "store")
    publish(Registry.open(store, create=True), str(tmp_path / "pub"), "ds", BASE)
    return store, {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def test_sync_waits_for_a_checkpoint_being_written_then_publishes_it_whole(tmp_path):
    """The newcomer's repro: half a checkpoint written and flushed, then `sync
    --alias best` published the half file as ds:best, exit 0.  Now sync says what
    it waits for and publishes the file once its writer closed it."""
    store, env = _store(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        f = open(m.p("ds", "draft", "ckpt.pt"), "wb")
        f.write(b"first half ")
        f.flush()
        closer = threading.Timer(1.5, lambda: (f.write(b"second half"), f.close()))
        closer.start()
        try:
            done = cli("sync", m.p("ds", "draft"), "--alias", "best", env=env)
        finally:
            closer.join()
        assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
        assert done.stderr == "ds: waiting up to 30 s for 1 file(s) open for writing to be closed: ckpt.pt\n"
    reg = Registry.open(store)
    assert version_files(reg, "ds", 1)["ckpt.pt"] == (b"first half second half", False)
    assert reg.resolve("proj", "ds", "best") == 1


def test_sync_publishes_nothing_of_a_draft_whose_file_stays_open(tmp_path):
    """Inodes, not names: a file being written that was renamed holds the draft
    back under its new name; one unlinked while open (in no version) does not;
    nor does a file opened read-write that was not changed since it was opened."""
    store, env = _store(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        d = m.p("ds", "draft")
        idle = os.open(os.path.join(d, "keep", "a"), os.O_RDWR)          # opened for writing, never written
        gone = os.open(os.path.join(d, "scratch"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(gone, b"scratch")
        os.unlink(os.path.join(d, "scratch"))                             # being written, but no name
        f = open(os.path.join(d, "ckpt.tmp"), "wb")
        f.write(b"half")
        f.flush()
        os.rename(os.path.join(d, "ckpt.tmp"), os.path.join(d, "ckpt.pt"))
        status = cli("status", d, env=env).stdout
        assert "being written (sync waits for them to be closed): ckpt.pt\n" in status
        assert "open for writing, unchanged since opened (sync publishes them as they are): keep/a" in status
        done = cli("sync", d, "--timeout", "1", env=env)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.splitlines()[-1] == ("Error: ds: not committed: 1 file(s) still open for writing after "
                                                "1 s: ckpt.pt; nothing was published, the draft is kept")
        assert Registry.open(store).latest("proj", "ds") == 0
        f.write(b" and the rest")
        f.close()
        done = cli("sync", d, "--timeout", "1", env=env)
        assert done.returncode == 0 and done.stdout == "ds:v1\n" and done.stderr == "", done.stderr
        os.close(idle)
        os.close(gone)
    files = version_files(Registry.open(store), "ds", 1)
    assert files["ckpt.pt"] == (b"half and the rest", False) and "scratch" not in files


def test_sync_waits_for_a_shared_mmap_writer(tmp_path):
    """numpy.memmap-style writing through a shared mapping: sync's syncfs writes
    the pages back, which marks the file changed since opened, so sync waits for
    the mapping (which keeps the file open) to go, then publishes what it wrote."""
    store, env = _store(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        path = m.p("ds", "draft", "keep", "a")
        fd = os.open(path, os.O_RDWR)
        mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)                                    # the mapping keeps the file open
        mm[:5] = b"HELLO"
        done = cli("sync", m.p("ds", "draft"), "--timeout", "1", env=env)
        assert done.returncode == 1 and "still open for writing after 1 s: keep/a;" in done.stderr
        assert Registry.open(store).latest("proj", "ds") == 0
        mm.close()
        done = cli("sync", m.p("ds", "draft"), env=env)
        assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
    assert version_files(Registry.open(store), "ds", 1)["keep/a"] == (b"HELLO" + b"a" * 4091, False)


def _record(i: int, n: int) -> bytes:
    body = bytes([i % 251]) * (4096 + n * 97)
    return hashlib.sha256(body).hexdigest().encode() + body


def _whole(data: bytes) -> bool:
    return hashlib.sha256(data[64:]).hexdigest().encode() == data[:64]


def test_no_torn_file_is_published_while_files_are_rewritten_in_place(tmp_path):
    """Writers rewrite files in place (open 'wb', half, a pause, the rest) while
    syncs run: every version published holds every file whole (each sync either
    publishes after the writers closed, or publishes nothing)."""
    store, env = _store(tmp_path)
    names = [f"f{i}" for i in range(6)]
    with mounted(store, tmp_path / "mnt", env=env) as m:
        d = m.p("ds", "draft")
        stop = threading.Event()

        def writer(k: int) -> None:
            for n in range(25):
                for name in names[k::2]:
                    data = _record(n + k, n)
                    with open(os.path.join(d, name), "wb") as f:
                        f.write(data[:len(data) // 2])
                        f.flush()
                        stop.wait(0.01)
                        f.write(data[len(data) // 2:])
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            done = cli("sync", d, "--timeout", "0.2", env=env)
            assert done.returncode == 0 or "still open for writing" in done.stderr, done.stderr
        for t in threads:
            t.join()
        assert cli("sync", d, env=env).returncode == 0
    reg = Registry.open(store)
    latest = reg.latest("proj", "ds")
    assert latest >= 1
    for v in range(1, latest + 1):
        files = version_files(reg, "ds", v)
        for name in names:
            if name in files:
                assert _whole(files[name][0]), f"ds:v{v} {name} is torn"


def test_a_sync_of_the_whole_mount_skips_recovered_drafts(tmp_path):
    """A cron job's `artifactfs sync MOUNTPOINT` used to publish a draft recovered
    after a crash (a half-written checkpoint) with no word.  Now it is skipped with
    one note naming how to publish or drop it, the others are published, exit 1;
    naming the draft publishes it."""
    store, env = _store(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        os.mkdir(m.p("other"))
        with open(m.p("other", "draft", "x"), "wb") as f:
            f.write(b"x")
        assert cli("sync", m.p("other", "draft"), env=env).returncode == 0
        fd = os.open(m.p("ds", "draft", "ckpt.pt"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"half of it")
        kill_daemon(m)
        with contextlib.suppress(OSError):
            os.close(fd)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        with open(m.p("other", "draft", "y"), "wb") as f:
            f.write(b"y")
        done = cli("sync", m.path, env=env)
        assert done.returncode == 1 and done.stdout == "other:v1\n"
        draft = m.p("ds", "draft")
        assert done.stderr == (f"note: ds: skipped, not published by a sync of the whole mount: it was being changed "
                               "when the mount's daemon stopped without committing (killed or crashed), so a file "
                               "being written then may be incomplete: check it, then `artifactfs sync` it, or "
                               f"`artifactfs discard` it (`artifactfs sync {draft}` publishes it, `artifactfs "
                               f"discard {draft}` drops its changes)\n")
        assert Registry.open(store).latest("proj", "ds") == 0
        done = cli("sync", draft, env=env)
        assert done.returncode == 0 and done.stdout == "ds:v1\n", done.stderr
        assert cli("sync", m.path, env=env).returncode == 0


def test_umount_says_a_draft_being_written_is_left_recovered(tmp_path):
    """umount --timeout with a writer still active said `what was written
    meanwhile is committed`, and the next mount's status blamed a kill or crash.
    Now umount says the draft was left unpublished and marked recovered, and
    status says the mount was stopped by umount with files open for writing."""
    store, env = _store(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        fd = os.open(m.p("ds", "draft", "ckpt2.pt"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"partial")
        done = m.umount("--timeout", "1")
        with contextlib.suppress(OSError):
            os.close(fd)
        assert done.returncode == 1
        assert "is committed" not in done.stderr
        left = ("it was left unpublished when the mount was stopped by `artifactfs umount` while 1 file(s) of it "
                "were still open for writing (ckpt2.pt), so one may be incomplete")
        assert f"Error: ds: not committed, marked recovered: {left}" in done.stderr
    assert Registry.open(store).latest("proj", "ds") == 0
    with mounted(store, tmp_path / "mnt", env=env) as m:
        status = cli("status", m.p("ds", "draft"), env=env).stdout
        assert f"note: {left}" in status and "killed or crashed" not in status
        assert cli("sync", m.p("ds", "draft"), env=env).stdout == "ds:v1\n"


def test_a_draft_set_aside_at_mount_is_named_by_mount_and_status(tmp_path):
    """A crashed draft whose base version was deleted (and collected by gc, so the
    draft cannot go on from it) before the remount was moved aside with only a
    log line: the draft looked empty, status said no changes.  Now mount prints
    where its work went, and status lists it with its path."""
    store, env = _store(tmp_path)
    with mounted(store, tmp_path / "mnt", env=env) as m:
        os.mkdir(m.p("sa2"))
        d = m.p("sa2", "draft")
        with open(os.path.join(d, "base.txt"), "wb") as f:
            f.write(b"b\n")
        assert cli("sync", d, env=env).stdout == "sa2:v0\n"
        with open(os.path.join(d, "work.txt"), "wb") as f:
            f.write(b"work\n")
        kill_daemon(m)
    assert cli("--store", store, "--project", "proj", "delete", "sa2:v0", "--delete-aliases", env=env).returncode == 0
    for pin in glob.glob(os.path.join(store, "**", "pins", "*.json"), recursive=True):  # the dead mount's pin,
        with open(pin) as f:                                                             # as gc sees it an hour on
            record = json.load(f)
        with open(pin, "w") as f:
            json.dump({**record, "heartbeat": 0}, f)
    done = cli("--store", store, "--project", "proj", "gc", "--grace", "0s", "--keep-deleted", "0s", env=env)
    assert done.returncode == 0, done.stderr
    mnt = str(tmp_path / "mnt")
    done = cli("--store", store, "--project", "proj", "mount", mnt, env=env)
    try:
        assert done.returncode == 0, done.stderr
        note, = done.stderr.splitlines()
        prefix = "note: the draft of sa2 was set aside, its base sa2:v0 is no longer in the store: its work is in "
        assert note.startswith(prefix) and note.endswith("/files")
        where = note[len(prefix):-len("/files")]
        assert open(os.path.join(where, "files", "work.txt"), "rb").read() == b"work\n"
        line = (f"sa2: a draft set aside, its base sa2:v0 is no longer in the store: its work is in {where}/files "
                f"(rm -r {where} when done with it)")
        assert cli("status", mnt, env=env).stdout == line + "\n"
        assert "set aside" not in cli("status", os.path.join(mnt, "ds", "draft"), env=env).stdout
        assert cli("status", os.path.join(mnt, "sa2"), env=env).stdout.splitlines()[-1] == line
    finally:
        cli("umount", mnt, env=env)
        force_unmount(mnt, env)
