"""The draft engine (artifactfs/drafts): inodes and directory entries in meta.db,
copy on write from the base, data files by inode, identity kept through every
change, errors that leave the draft as it was."""
from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import threading

import pytest
from conftest import randbytes, tmpfs
from draft_helpers import Paths, open_test_draft, publish

from artifactfs.drafts import filedata
from artifactfs.drafts.engine import ROOT
from artifactfs.drafts.frommemory import surely_absent
from artifactfs.drafts.lifecycle import base_gone, open_draft, put_aside
from artifactfs.drafts.meta import MetaDB
from artifactfs.drafts.slots import SET_ASIDE, claim_drafts_dir, drafts_dir
from artifactfs.paths import state_dir
from artifactfs.registry.versions import Registry

BASE = {"a/x": b"ax", "a/y": (b"ay" * 1000, True), "b/c/d": b"bcd", "top": b"t"}


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def reg(tmp_path, state) -> Registry:
    return Registry.open(str(tmp_path / "store"), create=True)


@pytest.fixture
def draft(reg, tmp_path) -> Paths:
    publish(reg, str(tmp_path / "pub"), "ds", BASE)
    return Paths(open_test_draft(reg))


def rows(p: Paths) -> int:
    with p.draft.db.lock:
        return p.draft.db._db.execute("SELECT count(*) FROM inodes").fetchone()[0]


def test_state_dir_is_private(state):
    path = state_dir()
    assert path == str(state / "artifactfs")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_fresh_draft_is_one_root_row(draft):
    assert rows(draft) == 1 and draft.staged() == []
    assert draft.listdir("") == ["a", "b", "top"]
    y = draft.stat("a/y")
    assert (y.size, y.mode, y.nlink) == (2000, stat.S_IFREG | 0o755, 1)
    assert draft.stat("b").nlink == 3 and draft.stat("").nlink == 4, "2 + sub-folders, as on ext4"
    assert draft.stat("nope") is None and draft.stat("top/under") is None
    assert not draft.draft.dirty
    assert stat.S_IMODE(os.stat(draft.draft.dir).st_mode) == 0o700


def test_a_change_materializes_only_its_path(draft):
    draft.create("b/c/new")
    assert rows(draft) == 4, "root, b, c and the new file: siblings stay in the base"
    assert draft.listdir("b/c") == ["d", "new"] and draft.listdir("") == ["a", "b", "top"]
    assert draft.node("top").id == 0 and draft.stat("b/c/d").size == 3
    assert draft.draft.dirty


def test_deleting_base_entries_writes_whiteouts(draft):
    draft.unlink("b/c/d")
    draft.rmdir("b/c")
    assert draft.listdir("b") == []
    draft.rmdir("b")
    assert draft.listdir("") == ["a", "top"]
    assert draft.stat("").nlink == 3


def test_copy_up_reads_base_once_and_o_trunc_fetches_nothing(draft):
    fetched = []
    real = draft.draft.fetch
    draft.draft.fetch = lambda entry, fd: (fetched.append(entry.size), real(entry, fd))
    y = draft.node("a/y")
    draft.write("a/y", b"AY")
    assert draft.read("a/y") == b"AY" + b"ay" * 999 and fetched == [2000]
    assert y.staged and draft.stat("a/y").mode & 0o777 == 0o755
    draft.truncate("a/x", 0)
    assert draft.read("a/x") == b"" and fetched == [2000]
    draft.truncate("b/c/d", 2)
    assert draft.read("b/c/d") == b"bc"


def test_chmod_of_a_base_file_fetches_nothing(draft):
    draft.chmod("top", 0o4750)
    got = draft.stat("top")
    assert got.mode == stat.S_IFREG | 0o4750 and got.size == 1 and draft.staged() == []


def test_rename_of_a_base_folder_moves_it_whole(draft):
    draft.rename("b", "a/moved")
    moved = draft.node("a/moved")
    assert moved.tree is not None and rows(draft) == 3
    assert draft.stat("a/moved/c/d").size == 3 and draft.stat("b") is None


def test_rename_over_file_noreplace_exchange(draft):
    x = draft.node("top")
    draft.rename("top", "a/x")
    assert draft.node("a/x") is x and draft.stat("top") is None
    with pytest.raises(FileExistsError):
        draft.rename("a/x", "a/y", noreplace=True)
    with pytest.raises(OSError) as e:
        draft.rename("a", "b")  # over a non-empty (base) folder
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        draft.rename("b", "b/c/inside")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        draft.rename("b/c/d", "b")  # over a folder above it: the kernel's ENOTEMPTY, before EISDIR
    assert e.value.errno == errno.ENOTEMPTY
    a, b = draft.node("a"), draft.node("b")
    draft.draft.rename(draft.draft.root, "a", draft.draft.root, "b", exchange=True)
    assert draft.node("a") is b and draft.node("b") is a


def test_rmdir_and_unlink(draft):
    with pytest.raises(OSError) as e:
        draft.rmdir("b")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        draft.unlink("a")
    with pytest.raises(FileNotFoundError):
        draft.unlink("a/none")
    with pytest.raises(NotADirectoryError):
        draft.rmdir("top")


@pytest.mark.parametrize("name, code", [("x" * 256, errno.ENAMETOOLONG), ("bad\udce9", errno.EINVAL),
                                        ("..", errno.EINVAL)])
def test_names_refused(draft, name, code):
    for op in (lambda: draft.create(name), lambda: draft.mkdir(name), lambda: draft.rename("top", name)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == code
    assert draft.stat("top") is not None and rows(draft) == 1


def test_any_utf8_name_up_to_255_bytes(draft):
    for name in ("back\\slash", "é" * 127, "x" * 255, " lead", "new\nline"):
        draft.write(name, name.encode())
        assert draft.read(name) == name.encode()


def test_identity_through_unlink_rename_and_copy_up(draft):
    """An inode keeps its bytes whatever happens to its names."""
    f = draft.create("x")
    draft.unlink("x")
    filedata.write(draft.draft, f, 0, b"hello")
    assert filedata.read(draft.draft, f, 0, 100) == b"hello" and filedata.attributes(draft.draft, f).size == 5
    assert f.nlink == 0 and draft.stat("x") is None
    base = draft.node("top")
    draft.write("other", b"new")
    draft.rename("other", "top")                 # replaced: the old inode still shows the base bytes
    assert base.nlink == 0 and base.base is not None and draft.read("top") == b"new"
    draft.draft.forget(f)
    assert str(f.id) not in draft.staged(), "an unlinked inode goes when forgotten"


def test_hard_links_share_one_inode(draft):
    draft.link("top", "a/again")
    t = draft.node("top")
    assert draft.node("a/again") is t and draft.stat("top").nlink == 2
    draft.write("a/again", b"T")
    assert draft.read("top") == b"T"
    draft.unlink("top")
    assert draft.stat("a/again").nlink == 1 and draft.read("a/again") == b"T"
    with pytest.raises(PermissionError):
        draft.link("a", "a2")


def test_new_names_are_known_absent_from_memory_and_a_failed_change_forgets(draft, monkeypatch):
    """A negative lookup in a folder made in the draft needs no query once its names
    are known (the mount answers it on its event loop); a change that fails half-way
    leaves memory agreeing with the rows."""
    engine = draft.draft
    draft.mkdir("new")
    new = draft.node("new")
    assert draft.stat("new/x") is None  # (looked for: the folder's names are known from now on)
    assert surely_absent(engine, new, "x")
    draft.create("new/x")
    assert not surely_absent(engine, new, "x") and not surely_absent(engine, engine.root, "zz"), \
        "a folder over a base sub-tree asks the tree"
    draft.rename("new/x", "new/y")
    assert surely_absent(engine, new, "x") and not surely_absent(engine, new, "y")
    draft.unlink("new/y")
    assert surely_absent(engine, new, "y")
    with engine.db.lock:  # a change half-made in another thread: memory does not answer
        seen: list[bool] = []
        other = threading.Thread(target=lambda: seen.append(surely_absent(engine, new, "y")))
        other.start()
        other.join()
        assert seen == [False]

    def full(row):  # the folder's new times fail to reach the database, after its entry did
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(engine, "_stamp_dir", lambda d, t, links=0: full(None))
    with pytest.raises(OSError):
        draft.create("new/z")
    monkeypatch.undo()
    assert draft.stat("new/z") is None and surely_absent(engine, new, "z")
    with engine.db.lock:
        for parent, names in engine.db._names.items():
            assert names == {name for name, _ in engine.db.dentries(parent)}


def test_meta_db_pages_are_small_for_new_drafts_and_kept_for_old_ones(tmp_path):
    """A new meta.db has 1 KiB pages (a created file writes 4 KiB of WAL, not 16);
    one made with 4 KiB pages opens as it is; both checkpoint every 16 MiB of WAL."""
    new = MetaDB(str(tmp_path / "new.db"))
    old_path = str(tmp_path / "old.db")
    made = sqlite3.connect(old_path)
    made.execute("PRAGMA page_size=4096")
    made.execute("PRAGMA journal_mode=WAL")
    made.execute("CREATE TABLE t (x)")
    made.close()
    old = MetaDB(old_path)
    for db, page in ((new, 1024), (old, 4096)):
        with db.lock:
            assert db._db.execute("PRAGMA page_size").fetchone()[0] == page
            assert db._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * page == 16 << 20
        db.close()


def test_failed_copy_up_leaves_the_base(reg, draft):
    def failing(entry, fd):
        os.write(fd, b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    draft.draft.fetch = failing
    with pytest.raises(OSError) as e:
        draft.write("a/x", b"!")
    assert e.value.errno == errno.ENOSPC
    x = draft.node("a/x")
    assert not x.staged and x.base.size == 2 and draft.staged() == [], "no temporary left"


def test_enospc_on_a_full_disk_keeps_what_was_staged(tmp_path, monkeypatch, reg):
    """A real, tiny tmpfs as the state dir: the writer gets ENOSPC, earlier files stay."""
    with tmpfs(tmp_path / "small", "1m") as small:
        monkeypatch.setenv("XDG_STATE_HOME", str(small))
        publish(reg, str(tmp_path / "pub"), "big", {"f": randbytes(700_000)})
        d = Paths(open_test_draft(reg, "big"))
        d.write("kept", b"k" * 100_000)
        with pytest.raises(OSError) as e:
            d.write("huge", b"h" * 2_000_000)
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            d.write("f", b"!")  # 700 kB no longer fits
        assert e.value.errno == errno.ENOSPC
        assert d.stat("f").size == 700_000 and not d.node("f").staged, "still the base file"
        assert d.read("kept") == b"k" * 100_000


def test_recover_removes_orphans_and_stray_data(draft):
    f = draft.create("gone")
    draft.unlink("gone")
    open(os.path.join(draft.draft.data, "999.tmp"), "wb").close()
    draft.draft.close()
    again = Paths(open_test_draft(draft.draft.io))
    assert again.staged() == [] and again.stat("gone") is None
    assert again.draft.db.row(f.id) is None and again.draft.db.row(ROOT) is not None


def test_each_live_process_gets_its_own_drafts_slot(reg):
    """Two mounts of one store and project never share a draft; a dead one's slot is taken over."""
    first, fd = claim_drafts_dir(reg.identity, reg.store.url, "proj")
    second, fd2 = claim_drafts_dir(reg.identity, reg.store.url, "proj")
    assert first != second and os.path.basename(first) == "0"
    os.close(fd)  # the first process died: its flock is gone
    again, fd3 = claim_drafts_dir(reg.identity, reg.store.url, "proj")
    assert again == first
    os.makedirs(os.path.join(second, "orphan"))
    open(os.path.join(second, "orphan", "meta.db"), "w").close()
    os.close(fd2)  # the second died too, leaving a draft behind
    os.close(fd3)
    taken, fd4 = claim_drafts_dir(reg.identity, reg.store.url, "proj")
    assert taken == first and os.path.exists(os.path.join(first, "orphan", "meta.db")), \
        "a dead mount's drafts are taken over by the next one"
    os.close(fd4)


def test_a_store_made_again_is_another_store(tmp_path, state):
    """Drafts belong to the store's identity (the id in its marker), not its URL."""
    url = str(tmp_path / "again")
    first = Registry.open(url, create=True)
    subprocess.run(["rm", "-rf", url], check=True)
    second = Registry.open(url, create=True)
    assert first.identity != second.identity and first.store.url == second.store.url
    assert drafts_dir(first.identity, url, "p") != drafts_dir(second.identity, url, "p")


def test_a_draft_whose_base_is_gone_is_set_aside_with_its_files(reg, draft, tmp_path):
    draft.write("mine/kept", b"kept bytes")
    draft.symlink("mine/kept", "link")
    assert not base_gone(reg, draft.draft)
    where = os.path.dirname(draft.draft.dir)
    subprocess.run(["rm", "-rf", str(tmp_path / "store" / "projects")], check=True)
    assert base_gone(reg, draft.draft)
    draft.draft.close()
    moved = put_aside(draft.draft.dir, "test")
    assert os.path.dirname(moved) == os.path.join(os.path.dirname(where), SET_ASIDE)
    assert open(os.path.join(moved, "files", "mine", "kept"), "rb").read() == b"kept bytes"
    assert os.readlink(os.path.join(moved, "files", "link")) == "mine/kept"
    fresh = open_draft(reg, where, "proj", "ds", draft.draft.fetch, draft.draft.owner, "dataset", None)
    assert fresh.readdir(fresh.root) == [] and not fresh.dirty


def test_tokens_are_stable_identities(draft):
    """The identity the mount shows as st_ino survives the inode being dropped from
    memory and found again: made here, a base entry, a base entry materialized."""
    made = draft.create("made").token
    base = draft.node("a/x").token
    draft.chmod("top", 0o600)
    top = draft.node("top").token
    assert made.startswith("i") and base.startswith("v") and top.startswith("v") and len({made, base, top}) == 3
    draft.draft.close()
    again = Paths(open_test_draft(draft.draft.io))
    assert (again.node("made").token, again.node("a/x").token, again.node("top").token) == (made, base, top)
    draft_top = again.node("top")
    again.rename("top", "a/top")
    assert again.node("a/top") is draft_top and draft_top.token == top
