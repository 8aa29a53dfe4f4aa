"""The on-disk draft (staging.py): copy on write from the base, stand-ins on disk,
every operation a syscall on a real tree, errors that leave the draft as it was."""
from __future__ import annotations

import errno
import os
import stat
import subprocess

import pytest

from artifactfs.draftcommit import fetch_from_store, open_draft
from artifactfs.errors import InvalidNameError
from artifactfs.registry import Registry
from artifactfs.draftstate import TMP, claim_drafts_dir, drafts_dir
from artifactfs.mount.state import state_dir
from artifactfs.staging import Draft
from artifactfs.standins import LAZY, WHITEOUT, is_placeholder, lazy_of
from conftest import randbytes, skip_or_fail
from draft_helpers import publish

BASE = {"a/x": b"ax", "a/y": (b"ay" * 1000, True), "b/c/d": b"bcd", "top": b"t"}


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def reg(tmp_path, state) -> Registry:
    return Registry.open(str(tmp_path / "store"), create=True)


@pytest.fixture
def draft(reg, tmp_path) -> Draft:
    publish(reg, str(tmp_path / "pub"), "ds", BASE)
    return open_draft(reg, drafts_dir(reg.store.url, "proj"), "proj", "ds", fetch_from_store(reg))


def read(draft: Draft, path: str) -> bytes:
    with open(draft.disk(path), "rb") as f:
        return f.read()


def test_state_dir_is_private(state):
    path = state_dir()
    assert path == str(state / "artifactfs")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_fresh_draft_is_one_lazy_root(draft):
    assert os.listdir(draft.tree) == [LAZY]
    assert [n.path for n in draft.listdir("")] == ["a", "b", "top"]
    y = draft.stat("a/y")
    assert (y.size, y.mode, y.disk, y.entry.executable) == (2000, 0o755, None, True)
    assert draft.stat("b/c").is_dir and draft.stat("b/c/d").size == 3
    assert draft.stat("nope") is None and draft.stat("top/under") is None
    assert draft.is_clean()
    assert stat.S_IMODE(os.stat(draft.dir).st_mode) == 0o700


def test_a_change_puts_only_its_path_on_disk(draft):
    os.close(draft.create("b/c/new", 0o644))
    assert sorted(os.listdir(draft.tree)) == [LAZY, "b"], "siblings stay in the base"
    assert sorted(os.listdir(draft.disk("b"))) == [LAZY, "c"]
    assert sorted(os.listdir(draft.disk("b/c"))) == [LAZY, "new"]
    assert [n.path for n in draft.listdir("b/c")] == ["b/c/d", "b/c/new"]
    assert [n.path for n in draft.listdir("")] == ["a", "b", "top"]
    assert draft.stat("top").disk is None and draft.stat("b/c/d").entry.size == 3
    assert not draft.is_clean()


def test_deleting_base_entries_writes_whiteouts(draft):
    draft.unlink("b/c/d")
    draft.rmdir("b/c")
    assert draft.listdir("b") == []
    draft.rmdir("b")
    assert [n.path for n in draft.listdir("")] == ["a", "top"]
    assert draft.stat("b") is None and draft.stat("b/c/d") is None
    assert len([n for n in os.listdir(draft.tree) if n.startswith(WHITEOUT)]) == 1
    os.close(draft.create("b", 0o644))  # the name is free again
    assert draft.stat("b").size == 0


def test_copy_up_reads_base_once_and_o_trunc_fetches_nothing(draft):
    disk = draft.copy_up("a/y")
    assert read(draft, "a/y") == b"ay" * 1000
    st = os.lstat(disk)
    assert not is_placeholder(st) and stat.S_IMODE(st.st_mode) == 0o755
    assert draft.stat("a/y").entry is None  # a real file now
    assert draft.copy_up("a/y") == disk  # already real: nothing happens
    draft.truncate("a/x", 0)
    assert read(draft, "a/x") == b"" and not is_placeholder(os.lstat(draft.disk("a/x")))
    draft.truncate("b/c/d", 2)
    assert read(draft, "b/c/d") == b"bc"


def test_chmod_of_placeholder_keeps_it_a_placeholder(draft):
    draft.chmod("top", 0o4755)  # setuid is not part of a version and is dropped
    st = os.lstat(draft.disk("top"))
    assert is_placeholder(st) and stat.S_IMODE(st.st_mode) & 0o7777 == 0o1755
    node = draft.stat("top")
    assert node.mode == 0o755 and node.entry.executable and node.size == 1


def test_rename_of_lazy_folder_keeps_it_lazy(draft):
    draft.rename("b", "a/moved")
    assert lazy_of(draft.disk("a/moved")) is not None
    assert draft.stat("a/moved/c/d").size == 3 and draft.stat("b") is None


def test_rename_over_file_and_noreplace(draft):
    draft.rename("top", "a/x")
    assert draft.stat("a/x").size == 1 and draft.stat("top") is None
    with pytest.raises(FileExistsError):
        draft.rename("a/x", "a/y", noreplace=True)
    with pytest.raises(OSError) as e:
        draft.rename("a", "b")  # over a non-empty (lazy) folder
    assert e.value.errno == errno.ENOTEMPTY


def test_rmdir_and_unlink(draft):
    with pytest.raises(OSError) as e:
        draft.rmdir("b")
    assert e.value.errno == errno.ENOTEMPTY
    draft.unlink("b/c/d")
    draft.rmdir("b/c")
    draft.rmdir("b")
    assert [n.path for n in draft.listdir("")] == ["a", "top"]
    with pytest.raises(IsADirectoryError):
        draft.unlink("a")
    with pytest.raises(FileNotFoundError):
        draft.unlink("a/none")
    with pytest.raises(PermissionError):
        draft.rmdir("")


@pytest.mark.parametrize("name", ["back\\slash", "..", "x" * 256])
def test_names_invalid_in_an_artifact_are_refused(draft, name):
    for op in (lambda: os.close(draft.create(name, 0o644)), lambda: draft.mkdir(name, 0o755),
               lambda: draft.rename("top", name)):
        with pytest.raises(InvalidNameError):
            op()
    assert draft.stat("top") is not None


def test_internal_names_are_invisible(draft):
    os.close(draft.create("a/new", 0o644))
    with open(os.path.join(draft.disk("a"), TMP + "leftover"), "w"):
        pass
    assert [n.path for n in draft.listdir("a")] == ["a/new", "a/x", "a/y"]
    assert draft.stat("a/" + TMP + "leftover") is None and draft.stat(LAZY) is None
    with pytest.raises(FileNotFoundError):
        draft.unlink("a/" + TMP + "leftover")
    draft.recover()
    assert not [n for n in os.listdir(draft.disk("a")) if n.startswith(TMP)]


def test_failed_copy_up_leaves_the_placeholder(reg, draft):
    def failing(entry, fd):
        os.write(fd, b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    draft.fetch = failing
    with pytest.raises(OSError) as e:
        draft.copy_up("a/x")
    assert e.value.errno == errno.ENOSPC
    assert is_placeholder(os.lstat(draft.disk("a/x"))) and draft.stat("a/x").entry.size == 2
    assert sorted(os.listdir(draft.disk("a"))) == [LAZY, "x"], "no temporary left"


def test_enospc_on_a_full_disk_keeps_what_was_staged(tmp_path, monkeypatch, reg):
    """A real, tiny tmpfs as the state dir: the writer gets ENOSPC, earlier files stay."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode:
        skip_or_fail("cannot mount a tmpfs here")
    try:
        monkeypatch.setenv("XDG_STATE_HOME", str(small))
        publish(reg, str(tmp_path / "pub"), "big", {"f": randbytes(700_000)})
        d = open_draft(reg, drafts_dir(reg.store.url, "proj"), "proj", "big", fetch_from_store(reg))
        with open(d.create("kept", 0o644), "wb") as f:
            f.write(b"k" * 100_000)
        with pytest.raises(OSError) as e:
            with open(d.create("huge", 0o644), "wb") as f:
                f.write(b"h" * 2_000_000)
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            d.copy_up("f")  # 700 kB no longer fits
        assert e.value.errno == errno.ENOSPC
        assert d.stat("f").entry.size == 700_000, "still the base file"
        assert not [n for n in os.listdir(d.tree) if n.startswith(TMP)]
        assert read(d, "kept") == b"k" * 100_000
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_interrupted_advance_is_finished_on_load(reg, draft, tmp_path):
    v1 = publish(reg, str(tmp_path / "pub"), "ds", {"top": b"new top", "a/x": None})
    info = reg.version("proj", "ds", v1)
    os.close(draft.create("b/mine", 0o644))
    # journal the advance as a killed process would have left it, with nothing moved yet
    draft.state.advancing = {"version": v1, "root": info.root, "mtime_ns": 1, "clean": {}}
    draft.save_state()
    again = Draft(draft.dir, reg, draft.fetch)
    assert again.state.base == v1 and again.state.advancing is None
    assert again.stat("top").size == 7
    assert again.stat("a/x") is None and again.stat("b/mine") is not None


def test_each_live_process_gets_its_own_drafts_slot(reg):
    """Two mounts of one store and project never share a draft; a dead one's slot is taken over."""
    first, fd = claim_drafts_dir(reg.store.url, "proj")
    second, fd2 = claim_drafts_dir(reg.store.url, "proj")
    assert first != second and os.path.basename(first) == "0"
    os.close(fd)  # the first process died: its flock is gone
    again, fd3 = claim_drafts_dir(reg.store.url, "proj")
    assert again == first
    os.makedirs(os.path.join(second, "orphan"))
    open(os.path.join(second, "orphan", "draft.json"), "w").close()
    os.close(fd2)  # the second died too, leaving a draft behind
    os.close(fd3)
    taken, fd4 = claim_drafts_dir(reg.store.url, "proj")
    assert taken == first and os.path.exists(os.path.join(first, "orphan", "draft.json")), \
        "a dead mount's drafts are taken over by the next one"
    os.close(fd4)
