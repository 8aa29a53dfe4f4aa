"""Draft commit (drafts/commit.py): only changed files hashed, moved folders grafted,
rebase onto a newer latest, conflicts refused with the draft untouched, and a
committing process killed at random points never leaves a partial version."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time

import pytest
from conftest import randbytes
from core_util import check_version_complete, synthetic_entry
from draft_helpers import Paths, dir_files, open_test_draft, publish, version_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifactfs.drafts import commit
from artifactfs.drafts.advance import reclaim
from artifactfs.drafts.commit import commit_draft, draft_changes, scan
from artifactfs.errors import ConflictError, PathConflictError
from artifactfs.registry.keys import blob_key
from artifactfs.registry.manifest import DirEntry, apply_changes, artifact_digest, walk
from artifactfs.registry.treedigest import TreeDigests
from artifactfs.registry.versions import Registry

TESTS = os.path.dirname(os.path.abspath(__file__))
BASE = {"a/x": b"ax", "a/y": (b"ay" * 1000, True), "b/c/d": b"bcd", "b/e": b"be", "top": b"t"}


@pytest.fixture
def reg(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return Registry.open(str(tmp_path / "store"), create=True)


@pytest.fixture
def pub(tmp_path) -> str:
    return str(tmp_path / "pub")


def draft_of(reg: Registry, name: str = "ds") -> Paths:
    return Paths(open_test_draft(reg, name))


def write(p: Paths, path: str, data: bytes, offset: int = 0) -> None:
    p.write(path, data, offset)


def changes_of(reg: Registry, p: Paths) -> dict:
    return draft_changes(reg, p.draft)[0].changes


def expected(base: dict, **changes) -> dict:
    out = {p: (v if isinstance(v, tuple) else (v, False)) for p, v in base.items()}
    for p, v in changes.items():
        p = p.replace("__", "/")
        if v is None:
            out.pop(p)
        else:
            out[p] = v if isinstance(v, tuple) else (v, False)
    return out


def test_apply_changes_grafts_a_subtree(reg, pub):
    v0 = publish(reg, pub, "ds", BASE)
    root = reg.version("proj", "ds", v0).root
    b = reg.lookup(root, "b")
    new = apply_changes(reg, root, {"b": None, "z/moved": b, "z/moved/c/extra": reg.lookup(root, "top")})
    files = dict(walk(reg, new.tree))
    assert sorted(files) == ["a/x", "a/y", "top", "z/moved/c/d", "z/moved/c/extra", "z/moved/e"]
    assert (new.size, new.files) == (2 + 2000 + 3 + 2 + 1 + 1, 6)
    with pytest.raises(PathConflictError):
        apply_changes(reg, root, {"top": reg.lookup(root, "a/x"), "top/under": reg.lookup(root, "a/x")})


def test_new_collection_first_commit(reg):
    d = draft_of(reg, "fresh")
    assert d.draft.state.base is None and not d.draft.dirty
    write(d, "data/train.bin", b"123")
    d.mkdir("empty", 0o755)
    d.create("run.sh", 0o755)
    r = commit_draft(reg, d.draft, aliases=["best"], tags=["t1"], description="first")
    assert r.line == "fresh:v0"
    info = reg.version("proj", "fresh", 0)
    assert (info.description, info.tags, sorted(info.aliases)) == ("first", ["t1"], ["best", "latest"])
    assert version_files(reg, "fresh", 0) == {"data/train.bin": (b"123", False), "run.sh": (b"", True)}
    assert d.draft.state.base == 0 and d.draft.state.attrs == {}


def test_only_changed_files_are_hashed(reg, pub, monkeypatch):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    hashed: list[str] = []
    real_store = commit.store_staged

    def counting(registry, paths, where, known):
        hashed.extend(os.path.basename(p) for p in paths)
        return real_store(registry, paths, where, known)
    monkeypatch.setattr(commit, "store_staged", counting)

    def ids(path: str) -> str:
        return str(d.node(path).id)
    write(d, "a/x", b"AX")
    write(d, "new", b"n")
    d.chmod("top", 0o755)
    time.sleep(0.02)  # let the clock move past the files' ctime, so they can be recorded clean
    r = commit_draft(reg, d.draft)
    assert sorted(hashed) == sorted([ids("a/x"), ids("new")]) and r.line == "ds:v1"
    assert version_files(reg, "ds", 1) == expected(BASE, a__x=b"AX", new=b"n", top=(b"t", True))
    hashed.clear()
    write(d, "b/e", b"BE")
    assert commit_draft(reg, d.draft).line == "ds:v2"
    assert hashed == [ids("b/e")], "files already committed and unchanged are not hashed again"
    hashed.clear()
    write(d, "a/x", b"Ax")  # same size, new content: the stamp (ctime) tells
    assert commit_draft(reg, d.draft).line == "ds:v3"
    assert hashed == [ids("a/x")] and version_files(reg, "ds", 3)["a/x"] == (b"Ax", False)


def test_unchanged_rule(reg, pub):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    assert commit_draft(reg, d.draft).line == "ds:v0 (unchanged)"
    write(d, "a/x", b"changed")
    write(d, "a/x", b"ax")
    d.truncate("a/x", 2)
    d.rename("b", "b2")
    d.rename("b2", "b")
    assert scan(d.draft).staged, "a/x is staged now"
    assert commit_draft(reg, d.draft, aliases=["same"]).line == "ds:v0 (unchanged)"
    assert "same" in reg.version("proj", "ds", 0).aliases


def test_undone_changes_leave_a_clean_draft(reg, pub):
    """chmod and back, a folder moved and back: nothing to commit, and after the
    commit the draft is clean again (it then follows a newer latest by itself)."""
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    d.chmod("top", 0o755)
    d.chmod("top", 0o644)
    d.rename("b", "b2")
    d.rename("b2", "b")
    d.chmod("a/y", 0o700)
    d.chmod("a/y", 0o755)
    assert d.draft.dirty
    assert changes_of(reg, d) == {}
    assert commit_draft(reg, d.draft).line == "ds:v0 (unchanged)"
    assert not d.draft.dirty
    publish(reg, pub, "ds", {"top": b"theirs"})
    assert commit_draft(reg, d.draft).line == "ds:v1 (unchanged)"
    assert d.read("top") == b"theirs", "a file with a row but untouched follows the new base"


def test_moved_folder_is_a_graft(reg, pub):
    v0 = publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    d.mkdir("deep", 0o755)
    d.rename("b", "deep/b")
    changes = changes_of(reg, d)
    b = reg.lookup(reg.version("proj", "ds", v0).root, "b")
    assert changes == {"b": None, "deep/b": DirEntry(b.tree, b.size, b.files)}
    r = commit_draft(reg, d.draft)
    assert version_files(reg, "ds", r.version) == expected(BASE, b__c__d=None, b__e=None,
                                                           deep__b__c__d=b"bcd", deep__b__e=b"be")
    assert reg.lookup(reg.version("proj", "ds", r.version).root, "deep/b").tree == b.tree


def test_rebase_onto_a_newer_latest(reg, pub):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    write(d, "a/x", b"mine")
    d.unlink("b/e")
    publish(reg, pub, "ds", {"top": b"theirs", "b/c/new": b"n"})  # v1 by another writer
    r = commit_draft(reg, d.draft)
    assert r.line == "ds:v2"
    want = expected(BASE, a__x=b"mine", b__e=None, top=b"theirs", b__c__new=b"n")
    assert version_files(reg, "ds", 2) == want
    assert reg.version("proj", "ds", 2).base == 1
    # the draft continues from v2: their files show through, nothing left to commit
    assert d.draft.state.base == 2 and d.stat("top").size == 6 and d.stat("b/c/new") is not None
    assert changes_of(reg, d) == {}
    assert commit_draft(reg, d.draft).line == "ds:v2 (unchanged)"


def test_conflict_names_paths_and_keeps_the_draft(reg, pub):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    write(d, "a/x", b"mine")
    d.unlink("b/c/d")
    d.rename("top", "top2")
    publish(reg, pub, "ds", {"a/x": b"theirs", "b/c/d": b"changed", "other": b"o"})
    before = changes_of(reg, d)
    with pytest.raises(ConflictError) as e:
        commit_draft(reg, d.draft)
    assert "a/x" in str(e.value) and "b/c/d" in str(e.value) and "top" not in str(e.value)
    assert changes_of(reg, d) == before and d.draft.state.base == 0
    assert reg.versions("proj", "ds") == [0, 1]
    # resolve: take their a/x, delete b/c/d anyway is still a conflict -> restore it as theirs
    write(d, "a/x", b"theirs")
    write(d, "b/c/d", b"changed")
    r = commit_draft(reg, d.draft)
    assert version_files(reg, "ds", r.version) == expected(BASE, a__x=b"theirs", b__c__d=b"changed",
                                                           other=b"o", top=None, top2=b"t")


def test_same_change_on_both_sides_is_no_conflict(reg, pub):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    write(d, "a/x", b"same")
    d.unlink("top")
    publish(reg, pub, "ds", {"a/x": b"same", "top": None})
    assert commit_draft(reg, d.draft).line == "ds:v1 (unchanged)"


def test_file_against_folder_is_a_conflict(reg, pub):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    write(d, "top2/inside", b"i")
    publish(reg, pub, "ds", {"top2": b"a file now"})
    with pytest.raises(ConflictError) as e:
        commit_draft(reg, d.draft)
    assert "top2" in str(e.value)


def test_pending_attributes_are_used_once(reg, pub):
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    d.draft.set_pending("description", "from xattr")
    d.draft.set_pending("metadata", {"lr": 0.1})
    d.draft.set_pending("aliases", ["cand"])
    write(d, "n", b"n")
    r = commit_draft(reg, d.draft, metadata={"epoch": 3}, tags=["x"])
    info = reg.version("proj", "ds", r.version)
    assert (info.description, info.metadata, info.tags) == ("from xattr", {"lr": 0.1, "epoch": 3}, ["x"])
    d.draft.close()
    assert "cand" in info.aliases and open_test_draft(reg).state.attrs == {}


CHILD = r"""
import sys
from artifactfs.registry.versions import Registry
from artifactfs.drafts.commit import commit_draft
sys.path.insert(0, sys.argv[2])
from draft_helpers import Paths, open_test_draft
reg = Registry.open(sys.argv[1])
d = Paths(open_test_draft(reg))
print("ready", flush=True)
print(commit_draft(reg, d.draft).line, flush=True)
"""


def _child(store: str, state: str) -> subprocess.Popen:
    env = {**os.environ, "XDG_STATE_HOME": state}
    p = subprocess.Popen([sys.executable, "-c", CHILD, store, TESTS], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_killed_commit_leaves_no_partial_version(tmp_path, monkeypatch):
    """SIGKILL a committing process at random points: afterwards there is either no
    new version or a complete one, the draft is intact, and the next commit gives
    exactly the intended content."""
    store, state = str(tmp_path / "store"), str(tmp_path / "state")
    monkeypatch.setenv("XDG_STATE_HOME", state)
    reg = Registry.open(store, create=True)
    base = {f"keep/{i:03d}": randbytes(2000) for i in range(40)} | {"old/f": b"o", "big": randbytes(300_000)}
    publish(reg, str(tmp_path / "pub"), "ds", base)
    d = draft_of(reg)
    mirror = str(tmp_path / "mirror")
    os.makedirs(mirror)
    for path, data in base.items():
        os.makedirs(os.path.dirname(os.path.join(mirror, path)), exist_ok=True)
        open(os.path.join(mirror, path), "wb").write(data)
    for i in range(150):
        data = randbytes(20_000)
        write(d, f"new/{i // 30}/{i:03d}", data)
        os.makedirs(os.path.join(mirror, f"new/{i // 30}"), exist_ok=True)
        open(os.path.join(mirror, f"new/{i // 30}/{i:03d}"), "wb").write(data)
    write(d, "big", b"patched", 1000)
    with open(os.path.join(mirror, "big"), "r+b") as f:
        f.seek(1000)
        f.write(b"patched")
    d.rename("old", "renamed")
    os.rename(os.path.join(mirror, "old"), os.path.join(mirror, "renamed"))
    want = dir_files(mirror)
    pristine = str(tmp_path / "pristine")
    shutil.copytree(store, pristine + "/store")
    shutil.copytree(state, pristine + "/state")

    def restore() -> None:
        shutil.rmtree(store)
        shutil.rmtree(state)
        shutil.copytree(pristine + "/store", store)
        shutil.copytree(pristine + "/state", state)

    t0 = time.monotonic()
    p = _child(store, state)
    assert p.stdout.readline().strip() == "ds:v1" and p.wait() == 0
    duration = time.monotonic() - t0
    outcomes = {"none": 0, "complete": 0}
    rng = random.Random(4)
    for attempt in range(10):
        restore()
        p = _child(store, state)
        time.sleep(rng.uniform(0, duration))
        p.kill()
        p.wait()
        reg = Registry.open(store)
        versions = reg.versions("proj", "ds")
        assert versions in ([0], [0, 1]), versions
        if versions == [0, 1]:
            check_version_complete(reg, "proj", "ds", 1)
            assert version_files(reg, "ds", 1) == want
        outcomes["complete" if versions == [0, 1] else "none"] += 1
        d = draft_of(reg)
        r = commit_draft(reg, d.draft)
        assert r.version == 1 and r.created == (versions == [0])
        assert version_files(reg, "ds", 1) == want
    assert outcomes["none"] and outcomes["complete"], outcomes


CONCURRENT = r"""
import errno
import os
import sys
from artifactfs.chunks import download, upload
from artifactfs.registry.versions import Registry
from artifactfs.drafts.commit import commit_draft
from artifactfs.errors import ConflictError
sys.path.insert(0, sys.argv[4])
from draft_helpers import Paths, open_test_draft
reg = Registry.open(sys.argv[1])
me, rounds = sys.argv[2], int(sys.argv[3])
d = p = Paths(open_test_draft(reg))

def put(path, data):
    p.write(path, data, trunc=True)

for i in range(rounds):
    put(f"{me}/{i}", f"{me} {i}".encode())
    put("shared", f"{me} {i}".encode())
    for attempt in range(50):
        try:
            print(commit_draft(reg, d.draft).line, flush=True)
            break
        except ConflictError as e:
            print("CONFLICT", e, flush=True)
            theirs = reg.lookup(reg.get("proj", "ds").root, "shared")  # resolve: take theirs
            put("shared", b"".join(download.read_chunk(reg, theirs, k, "shared") for k in range(len(theirs.chunks))))
    else:
        sys.exit("never committed")
"""


def test_two_processes_commit_concurrently(tmp_path):
    """Distinct versions, every private change kept, conflicts on the shared file reported."""
    store = str(tmp_path / "store")
    reg = Registry.open(store, create=True)
    publish(reg, str(tmp_path / "pub"), "ds", {"seed": b"s"})
    rounds = 6
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, store, who, str(rounds), TESTS],
                              env={**os.environ, "XDG_STATE_HOME": str(tmp_path / f"state-{who}")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("p", "q")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = [ln for out, _ in outs for ln in out.splitlines()]
    made = [ln for ln in lines if ln.startswith("ds:v") and "unchanged" not in ln]
    assert len(made) == len(set(made)), "each commit got its own version"
    assert any(ln.startswith("CONFLICT") and "shared" in ln for ln in lines) or len(made) == 2 * rounds
    final = version_files(reg, "ds", reg.latest("proj", "ds"))
    for who in ("p", "q"):
        for i in range(rounds):
            assert final[f"{who}/{i}"] == (f"{who} {i}".encode(), False), "no change lost"
    for n in reg.versions("proj", "ds"):
        check_version_complete(reg, "proj", "ds", n)


@given(st.sets(st.lists(st.sampled_from(["a", "a-b", "a.txt", "a0", "b", "é", "Z", "a b"]), min_size=1,
                        max_size=3).map("/".join), max_size=25))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tree_digest_equals_the_wandb_artifact_digest(tmp_path_factory, paths):
    """TreeDigests (cached per-tree blocks) gives exactly manifest.artifact_digest."""
    reg = Registry.open(str(tmp_path_factory.mktemp("td") / "store"), create=True)
    files = sorted(paths)
    changes = {p: synthetic_entry(i) for i, p in enumerate(files)
               if not any(q.startswith(p + "/") for q in files)}  # a path is a file or a folder
    root = apply_changes(reg, None, changes)
    assert TreeDigests(reg).digest(root.tree) == artifact_digest(walk(reg, root.tree))


def test_committed_files_hold_no_staging_space_of_their_own(reg, pub):
    """After a commit, a file written in order, of one chunk, in a local store is the
    version's blob (its data file and the blob are one inode: nothing to give back),
    also open ones and ones whose mode a version cannot hold; files stored as a
    copy are given back (big files: test_draft_tostore); the content is unchanged,
    and a later write copies the data file first (the blob never changes)."""
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    write(d, "new/deep/f", b"fresh" * 1000)
    write(d, "a/x", b"changed")
    write(d, "private", b"p")
    d.chmod("private", 0o600)
    held = d.node("new/deep/f")
    assert commit_draft(reg, d.draft).line == "ds:v1"
    assert reclaim(d.draft) == 1 and len(d.staged()) == 2, "a/x (copied up, read at commit) was given back"
    assert not d.node("a/x").staged and d.read("a/x") == b"changed"
    root = reg.version("proj", "ds", 1).root
    for path in ("new/deep/f", "private"):
        blob = os.path.join(reg.store.root, blob_key(reg.lookup(root, path).chunks[0]))
        assert os.stat(d.draft.data_path(d.node(path))).st_ino == os.stat(blob).st_ino, path
    assert d.node("new/deep/f") is held and d.stat("new/deep/f").size == 5000
    assert d.read("new/deep/f") == b"fresh" * 1000 and d.stat("private").mode & 0o777 == 0o600
    assert version_files(reg, "ds", 1) == expected(BASE, new__deep__f=b"fresh" * 1000, a__x=b"changed",
                                                   private=b"p")
    assert commit_draft(reg, d.draft).line == "ds:v1 (unchanged)"
    assert not d.draft.dirty, "a committed draft is clean again"
    write(d, "new/deep/f", b"more", 5000)
    assert d.node("new/deep/f") is held and held.staged
    assert commit_draft(reg, d.draft).line == "ds:v2"
    assert version_files(reg, "ds", 2)["new/deep/f"] == (b"fresh" * 1000 + b"more", False)
    assert version_files(reg, "ds", 1)["new/deep/f"] == (b"fresh" * 1000, False), "v1's blob is untouched"


def test_a_new_collections_draft_is_clean_after_its_first_commit(reg):
    d = draft_of(reg, "fresh")
    write(d, "x/y", b"y")
    write(d, "z", b"z")
    assert commit_draft(reg, d.draft).line == "fresh:v0"
    reclaim(d.draft)
    assert not d.draft.dirty
    assert d.listdir("") == ["x", "z"]
