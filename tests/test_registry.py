"""Registry and store-format invariants: content addressing, commit order,
version allocation, compare-and-swap, scale properties, crafted manifests, store errors."""
from __future__ import annotations

import json
import os

import pytest
import xxhash
from conftest import randbytes
from core_util import RecordingStore, check_version_complete, synthetic_entry, write_files

from artifactfs import Api, Artifact
from artifactfs.errors import (
    CorruptStoreError,
    NotFoundError,
    PathConflictError,
    PreconditionFailed,
    StoreError,
    UsageError,
)
from artifactfs.registry.manifest import (
    CHUNK_SIZE,
    DirEntry,
    apply_changes,
    artifact_digest,
    encode_tree,
    tree_key,
    walk,
)
from artifactfs.registry.versions import MARKER, Registry, blob_key
from artifactfs.store import open_store

P = "proj"
BOTH_STORES = True  # every test below runs on a local and an S3 store (tests/conftest.py)


def log_dir(store_url: str, src: str, name: str = "data", **kw) -> Artifact:
    art = Artifact(name, "dataset", store=store_url, **kw)
    art.add_dir(src)
    return art.save(P)


# -- content addressing -------------------------------------------------------
def test_blobs_are_keyed_by_xxh3_128_of_their_bytes(store_url, tmp_path):
    big = randbytes(CHUNK_SIZE + 12345)
    src = write_files(str(tmp_path / "src"), {"a.txt": "hello", "d/b.bin": big, "d/empty": b""})
    log_dir(store_url, src)
    store = open_store(store_url)
    blobs = list(store.list("blobs/"))
    packs = list(store.list("packs/"))
    for key in blobs:
        data = store.get(key)
        hexd = xxhash.xxh3_128_hexdigest(data)
        assert key == blob_key(hexd)
    # two chunks of big; 'hello' too, unless the store packs small files (S3:
    # store-format.md 5.6); the empty file has no blob
    if store.pack_below:
        assert [store.get(k) for k in packs] == [b"hello"]
        assert sorted(len(store.get(k)) for k in blobs) == [12345, CHUNK_SIZE]
    else:
        assert packs == [] and sorted(len(store.get(k)) for k in blobs) == [5, 12345, CHUNK_SIZE]


@pytest.mark.local_store
def test_blobs_are_never_rewritten(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a.txt": "same", "b.txt": "bytes"})
    log_dir(store_url, src, "one")
    store = open_store(store_url)
    before = {k: os.stat(os.path.join(store.root, k)) for k in store.list("blobs/")}
    rec = RecordingStore(store_url)
    api = Api(store_url, project=P)
    api.registry = Registry(rec)
    draft = api.artifact("one").new_draft()
    draft.add_file(os.path.join(src, "a.txt"), "copy-of-a.txt")
    draft.save()
    assert rec.count("put", "blobs/") == 0 and rec.count("put_if_absent", "blobs/") == 0
    after = {k: os.stat(os.path.join(store.root, k)) for k in store.list("blobs/")}
    assert {k: (s.st_ino, s.st_mtime_ns) for k, s in before.items()} == \
           {k: (s.st_ino, s.st_mtime_ns) for k, s in after.items()}


def test_trees_are_content_addressed_and_shared(store_url, tmp_path, monkeypatch):
    # equal directories of blob-stored files share trees; S3 packs small files per
    # upload (store-format.md 5.6), which would place them anew: not packed here
    monkeypatch.setattr(type(open_store(store_url)), "pack_below", 0)
    src = write_files(str(tmp_path / "src"), {"x/1": "1", "y/2": "2"})
    log_dir(store_url, src, "a")
    log_dir(store_url, src, "b")
    store = open_store(store_url)
    trees = list(store.list("trees/"))
    assert len(trees) == 3  # root, x, y: the second collection reuses all of them
    for key in trees:
        assert key.rsplit("/", 1)[1] == tree_key(store.get(key))


# -- commit protocol -------------------------------------------------------------
def test_version_record_is_written_last_after_a_sync(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"f0": "zero"})
    log_dir(store_url, src)
    rec = RecordingStore(store_url)
    api = Api(store_url, project=P)
    api.registry = Registry(rec)
    draft = api.artifact("data").new_draft()
    more = write_files(str(tmp_path / "more"), {"n/1": "one", "n/m/2": "two", "3": randbytes(100)})
    draft.add_dir(more, "new")
    draft.save()
    record = "projects/proj/collections/data/versions/v1.json"
    writes = [(i, op, k) for i, (op, k) in enumerate(rec.ops) if op in ("put", "put_if_absent", "cas", "sync")]
    rec_at = next(i for i, op, k in writes if k == record)
    assert rec.ops[rec_at][0] == "put_if_absent"
    data_writes = [i for i, op, k in writes if k.startswith(("blobs/", "trees/"))]
    assert len(data_writes) >= 3 + 4  # three blobs, trees root/new/new-n/new-n-m
    syncs = [i for i, op, _ in writes if op == "sync"]
    assert any(max(data_writes) < s < rec_at for s in syncs), rec.ops
    assert all(i < rec_at for i in data_writes)


def test_version_numbers_skip_taken_numbers_without_gaps(store_url, tmp_path):
    """A writer that read a stale 'latest' takes the next free number, not a gap."""
    reg = Registry.open(store_url, create=True)
    reg.ensure_collection(P, "c", "dataset")
    made = []
    for i in range(3):
        root = apply_changes(reg, None, {f"f{i}": synthetic_entry(i)})
        info, created = reg.commit(P, "c", "dataset", root, artifact_digest(walk(reg, root.tree)))
        made.append(info.version)
        assert created
    assert made == [0, 1, 2] and reg.versions(P, "c") == [0, 1, 2]
    # simulate a writer whose view of latest is stale: v3 is taken by someone else meanwhile
    reg.store.put_if_absent("projects/proj/collections/c/versions/v3.json",
                            reg.store.get("projects/proj/collections/c/versions/v2.json"))
    root = apply_changes(reg, None, {"other": synthetic_entry(99)})
    info, _ = reg.commit(P, "c", "dataset", root, artifact_digest(walk(reg, root.tree)))
    assert info.version == 4 and reg.versions(P, "c") == [0, 1, 2, 3, 4]


def test_identical_content_is_a_noop_commit(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    first = log_dir(store_url, src)
    again = log_dir(store_url, src)
    assert again.version == first.version == "v0"
    assert Registry.open(store_url).versions(P, "data") == [0]


def test_alias_cas_has_no_lost_update(store_url):
    reg = Registry.open(store_url, create=True)
    root = apply_changes(reg, None, {"f": synthetic_entry(1)})
    reg.commit(P, "c", "dataset", root, "d1")
    key = "projects/proj/collections/c/aliases.json"
    reg.set_alias(P, "c", "first", 0)
    _, etag = reg.store.get_versioned(key)
    Registry.open(store_url).set_alias(P, "c", "best", 0)  # another writer wins after our read
    with pytest.raises(PreconditionFailed):
        reg.store.compare_and_swap(key, b'{"mine": 0}', etag)
    reg.set_alias(P, "c", "mine", 0)  # the retrying path merges
    assert set(reg.aliases(P, "c")) == {"first", "best", "mine", "latest"}


def test_latest_alias_is_managed(store_url):
    reg = Registry.open(store_url, create=True)
    root = apply_changes(reg, None, {"f": synthetic_entry(1)})
    reg.commit(P, "c", "dataset", root, "d1")
    with pytest.raises(UsageError, match="latest"):
        reg.set_alias(P, "c", "latest", 0)
    with pytest.raises(NotFoundError):
        reg.set_alias(P, "c", "best", 7)
    with pytest.raises(NotFoundError):
        reg.set_alias(P, "c", "never-set", None)


# -- scale ------------------------------------------------------------------------
def big_parent(store_url: str, dirs: int = 20, subdirs: int = 20, files: int = 40) -> Registry:
    """Commit a synthetic version of dirs*subdirs*files entries (no blobs needed)."""
    reg = Registry.open(store_url, create=True)
    changes, i = {}, 0
    for a in range(dirs):
        for b in range(subdirs):
            for f in range(files):
                changes[f"a{a}/b{b}/f{f}"] = synthetic_entry(i)
                i += 1
    root = apply_changes(reg, None, changes)
    reg.commit(P, "big", "dataset", root, artifact_digest(walk(reg, root.tree)))
    return reg


def test_listing_one_directory_reads_only_its_trees(store_url):
    big_parent(store_url)
    rec = RecordingStore(store_url)
    reg = Registry(rec)
    info = reg.get(P, "big")
    entry = reg.lookup(info.root, "a7/b3")
    assert isinstance(entry, DirEntry) and entry.files == 40
    listing = reg.load(entry.tree)
    assert sorted(listing) == sorted(f"f{i}" for i in range(40))
    tree_reads = [k for op, k in rec.ops if op == "get" and k.startswith("trees/")]
    assert len(tree_reads) == 3  # root, a7, a7/b3 -- not the 16,000-file manifest
    read_bytes = sum(rec.size(k) for k in tree_reads)
    total_bytes = sum(rec.size(k) for k in rec.list("trees/"))
    assert read_bytes * 50 < total_bytes


@pytest.mark.parametrize("k", [1, 5])
def test_commit_of_k_changes_writes_k_times_depth_trees(store_url, tmp_path, k):
    big_parent(store_url)
    rec = RecordingStore(store_url)
    api = Api(store_url, project=P)
    api.registry = Registry(rec)
    draft = api.artifact("big:latest").new_draft()
    src = write_files(str(tmp_path / "src"), {f"c{i}": f"changed {i}" for i in range(k)})
    for i in range(k):
        draft.add_file(os.path.join(src, f"c{i}"), f"a{i}/b{i}/f0", overwrite=True)
    saved = draft.save()
    assert saved.version == "v1" and saved.file_count == 16000
    depth = 3  # root, aN, aN/bN
    tree_puts = rec.count("put", "trees/")
    assert 0 < tree_puts <= k * depth
    assert rec.count("put", "blobs/") == k
    assert saved.get_entry("a0/b0/f0").size == len("changed 0")
    assert saved.get_entry("a19/b19/f39").size == 10


# -- crafted manifests ------------------------------------------------------------
def crafted_version(store_url: str, entries: dict, nested: bool = False) -> None:
    """Commit a version whose root (or a sub-tree) is a hand-made tree object."""
    reg = Registry.open(store_url, create=True)
    data = json.dumps({"format": "artifactfs-tree-v1", "entries": entries}).encode()
    key = tree_key(data)
    reg.store.put(f"trees/{key[:2]}/{key}", data)
    if nested:
        data = encode_tree({"ok": DirEntry(key, 1, 1)})
        key = tree_key(data)
        reg.store.put(f"trees/{key[:2]}/{key}", data)
    reg.commit(P, "evil", "dataset", DirEntry(key, 1, 1), "deadbeef")


GOOD_FILE = {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": 0}


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("name", ["..", ".", "a/b", "/etc", "a\0b", "a\\b", ""])
def test_crafted_entry_names_are_rejected(store_url, tmp_path, name, nested):
    crafted_version(store_url, {name: GOOD_FILE}, nested)
    art = Api(store_url, project=P).artifact("evil")
    dest = tmp_path / "dest"
    with pytest.raises(CorruptStoreError):
        art.download(str(dest))
    assert not any(p.is_file() for p in tmp_path.rglob("*") if "store" not in p.parts)


@pytest.mark.parametrize("bad", [
    {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": 3, "chunks": ["../../etc/passwd"]},
    {"type": "file", "digest": "not base64!", "size": 3},
    {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": -1},
    {"type": "dir", "tree": "../../x", "size": 0, "files": 0},
    {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": 3, "chunks": []},
    {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": 3 * CHUNK_SIZE, "chunks": ["0" * 32]},
    {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": 3 * CHUNK_SIZE},
    {"type": "symlink", "target": ""},
    {"type": "symlink", "target": "a\0b"},
    {"type": "symlink", "target": 5},
    {"type": "symlink"},
    {"type": "symlink", "target": "x" * 4096},
    {"type": "file", "digest": "maoG0wFHmNhgAcMkRo1Jfw==", "size": 0, "extra": {"mtime_ns": "1"}},
])
def test_crafted_entries_are_rejected(store_url, tmp_path, bad):
    crafted_version(store_url, {"x": bad})
    art = Api(store_url, project=P).artifact("evil")
    with pytest.raises((CorruptStoreError, StoreError)):
        art.download(str(tmp_path / "dest"))


def test_corrupted_tree_object_is_detected(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"d/a": "a"})
    log_dir(store_url, src)
    store = open_store(store_url)
    for key in store.list("trees/"):
        body = json.loads(store.get(key))
        if "a" in body["entries"]:
            body["entries"]["b"] = body["entries"]["a"]
            store.put(key, json.dumps(body).encode())
    with pytest.raises(CorruptStoreError, match="corrupt"):
        Api(store_url, project=P).artifact("data").download(str(tmp_path / "out"))


# -- store errors ---------------------------------------------------------------
def test_read_only_use_of_a_missing_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(StoreError, match="nope"):
        Api(missing)
    assert not os.path.exists(missing)


def test_read_only_use_of_a_directory_with_other_things(tmp_path):
    other = write_files(str(tmp_path / "other"), {"notes.txt": "mine"})
    with pytest.raises(StoreError, match="not an artifactfs store"):
        Api(other)
    with pytest.raises(StoreError, match="not an artifactfs store"):
        Artifact("x", "dataset", store=other).save()
    assert os.listdir(other) == ["notes.txt"]


def test_store_path_that_is_a_file(tmp_path):
    f = write_files(str(tmp_path), {"file": "x"}) + "/file"
    with pytest.raises(StoreError):
        Api(f)
    with pytest.raises(StoreError):
        Registry.open(f, create=True)


def test_store_is_created_by_the_first_write_and_marked(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    log_dir(store_url, src)
    marker = json.loads(open_store(store_url).get(MARKER))
    assert marker["format"] == "artifactfs-store" and marker["version"] == 1
    assert Api(store_url).registry.entity == marker["name"] == os.path.basename(store_url)


def test_unsupported_store_url(tmp_path):
    with pytest.raises(StoreError, match="scheme"):
        Api("ftp://host/x")
    with pytest.raises(StoreError, match="host"):
        Api("file://otherhost/x")


@pytest.mark.local_store
def test_file_url_and_plain_path_name_the_same_store(store_url, tmp_path):
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    log_dir(store_url, src)
    assert Api("file://" + store_url, project=P).artifact("data").digest == \
           Api(store_url, project=P).artifact("data").digest


@pytest.mark.local_store
def test_incomplete_version_leftovers_are_invisible(store_url, tmp_path):
    """Temp files of a killed writer are not versions, collections or keys."""
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    log_dir(store_url, src)
    vdir = os.path.join(store_url, "projects/proj/collections/data/versions")
    open(os.path.join(vdir, "#tmp-0123"), "w").write("{half")
    open(os.path.join(vdir, "v1.json#lock"), "w").write("host 1")
    os.makedirs(os.path.join(store_url, "projects/proj/collections/half"))
    reg = Registry.open(store_url)
    assert reg.versions(P, "data") == [0]
    assert [c.name for c in reg.collections(P)] == ["data"]
    assert check_version_complete(reg, P, "data", 0) == 1


def test_names_that_look_like_internal_files_are_ordinary(store_url, tmp_path):
    """'x.lock' or '.tmp-x' are valid names and must not be hidden by the local store."""
    src = write_files(str(tmp_path / "src"), {"a": "a"})
    for name in ("model.lock", ".tmp-x"):
        log_dir(store_url, src, name)
    assert sorted(c.name for c in Registry.open(store_url).collections(P)) == [".tmp-x", "model.lock"]


@pytest.mark.local_store
def test_lock_of_a_dead_process_is_broken_at_once(store_url):
    import socket
    import subprocess
    import time
    reg = Registry.open(store_url, create=True)
    root = apply_changes(reg, None, {"f": synthetic_entry(1)})
    reg.commit(P, "c", "dataset", root, "d1")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = os.path.join(store_url, "projects/proj/collections/c/aliases.json#lock")
    with open(lock, "w") as f:
        f.write(f"{socket.gethostname()} {dead.pid}\n")
    t0 = time.monotonic()
    reg.set_alias(P, "c", "best", 0)
    assert time.monotonic() - t0 < 2
    assert reg.aliases(P, "c")["best"] == 0 and not os.path.exists(lock)


# -- trees behave like a flat manifest ----------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PATHS = st.lists(st.sampled_from(["a", "b", "c.txt"]), min_size=1, max_size=3).map("/".join)


@pytest.mark.local_store  # the tree algorithm, store-independent: 60 examples would cost ~30 s on moto
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.dictionaries(_PATHS, st.one_of(st.none(), st.integers(0, 5)), max_size=6),
                      min_size=1, max_size=4))
def test_apply_changes_matches_a_flat_model(store_url, steps):
    """Any sequence of commits gives the same files as a flat dict, and equal
    contents give the same root key however they were reached."""
    reg = Registry.open(store_url, create=True)
    model: dict[str, int] = {}
    root = None
    for step in steps:
        changes = {}
        # one change set is order-free: removals apply first, then additions
        for path, value in sorted(step.items(), key=lambda pv: pv[1] is not None):
            entry = None if value is None else synthetic_entry(value)
            trial = dict(model)
            if value is None:  # removes a file, or a whole directory
                trial = {p: v for p, v in trial.items() if p != path and not p.startswith(path + "/")}
            else:
                trial[path] = value
            if any(q != p and q.startswith(p + "/") for p in trial for q in trial):
                continue  # a file and a directory at one path: refused, tested below
            changes[path], model = entry, trial
        root = apply_changes(reg, root, changes).tree
    flat = dict(walk(reg, root))
    assert flat == {p: synthetic_entry(v) for p, v in model.items()}
    fresh = apply_changes(reg, None, {p: synthetic_entry(v) for p, v in model.items()})
    assert fresh.tree == root
    assert (fresh.size, fresh.files) == (10 * len(model), len(model))


def test_file_and_directory_at_one_path_is_refused(store_url):
    reg = Registry.open(store_url, create=True)
    root = apply_changes(reg, None, {"a": synthetic_entry(1)}).tree
    with pytest.raises(PathConflictError, match="both a file and a directory"):
        apply_changes(reg, root, {"a/b": synthetic_entry(2)})
    with pytest.raises(PathConflictError, match="both a file and a directory"):
        apply_changes(reg, None, {"x": synthetic_entry(1), "x/y": synthetic_entry(2)})


def test_tree_encoding_is_the_documented_canonical_json(store_url):
    reg = Registry.open(store_url, create=True)
    root = apply_changes(reg, None, {"é/f": synthetic_entry(1)})
    data = reg.store.get(f"trees/{root.tree[:2]}/{root.tree}")
    body = json.loads(data)
    assert data == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert data.isascii() and body["format"] == "artifactfs-tree-v1"
    empty = apply_changes(reg, None, {})
    assert reg.store.get(f"trees/{empty.tree[:2]}/{empty.tree}") == \
        b'{"entries":{},"format":"artifactfs-tree-v1"}'
