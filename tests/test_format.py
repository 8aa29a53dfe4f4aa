"""The version format (docs/store-format.md 3.5, 4): symlink entries, file mtimes
in `extra`, the one timestamp converter, and digests that do not depend on how a
tree was joined."""
from __future__ import annotations

import base64
import os
import random
import stat
from datetime import datetime, timedelta, timezone

import pytest
import xxhash
from mountutil import mounted, need_fuse

from artifactfs.errors import CorruptStoreError, InvalidNameError, PathConflictError
from artifactfs.registry.manifest import (
    FileEntry,
    SymlinkEntry,
    apply_changes,
    artifact_digest,
    decode_tree,
    encode_tree,
    walk,
    wandb_manifest,
)
from artifactfs.registry.treedigest import TreeDigests
from artifactfs.registry.versions import Registry
from artifactfs.timestamps import iso_ns, now_iso

P = "proj"


def digest_of(data: bytes) -> str:
    return base64.b64encode(xxhash.xxh3_128_digest(data)).decode()


def file_entry(data: bytes, mtime_ns: int | None = None) -> FileEntry:
    raw = xxhash.xxh3_128_digest(data)
    e = FileEntry(base64.b64encode(raw).decode(), len(data), (raw.hex(),) if data else ())
    return e.with_mtime(mtime_ns)


@pytest.fixture
def reg(store_url) -> Registry:
    return Registry.open(store_url, create=True)


# -- timestamps -------------------------------------------------------------------
def test_iso_ns_is_exact_for_every_sampled_time():
    rnd = random.Random(8)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    floats_off = 0
    for _ in range(2000):
        micros = rnd.randrange(0, 4_000_000_000 * 10**6)
        t = epoch + timedelta(microseconds=micros)
        text = t.isoformat(timespec="microseconds")
        assert iso_ns(text) == micros * 1000, text
        floats_off += int(datetime.fromisoformat(text).timestamp() * 1e9) != micros * 1000
    assert floats_off > 1000  # the float detour the old second converter took is wrong for most


def test_iso_ns_known_values():
    assert iso_ns("2026-01-02T03:04:05.123457+00:00") == 1767323045123457000
    assert iso_ns("2026-01-02T03:04:05.123457") == 1767323045123457000  # no zone: UTC
    assert iso_ns("2026-01-02T05:04:05.123457+02:00") == 1767323045123457000
    assert iso_ns("1969-12-31T23:59:59.999999+00:00") == -1000
    text = now_iso()
    assert iso_ns(text) == round(datetime.fromisoformat(text).timestamp() * 10**6) * 1000


# -- entries -----------------------------------------------------------------------
def test_file_mtime_lives_in_extra_and_round_trips():
    e = file_entry(b"abc", 1_700_000_000_123_456_789)
    assert e.mtime_ns == 1_700_000_000_123_456_789
    assert dict(e.extra) == {"alg": "XXH128", "mtime_ns": 1_700_000_000_123_456_789}
    back = decode_tree(encode_tree({"f": e}))["f"]
    assert back == e and back.mtime_ns == e.mtime_ns
    assert file_entry(b"abc").mtime_ns is None
    assert "extra" not in file_entry(b"abc").to_json()  # old trees keep their exact bytes
    assert e.with_mtime(None) == file_entry(b"abc")
    assert e.same_content(file_entry(b"abc", 5)) and not e.same_content(file_entry(b"abd", 5))


def test_symlink_entry_round_trips_and_its_wandb_view():
    link = SymlinkEntry("../data/ünï\nx")
    tree = {"l": link, "f": file_entry(b"x")}
    assert decode_tree(encode_tree(tree)) == tree
    assert link.to_json() == {"type": "symlink", "target": "../data/ünï\nx"}
    target = "../data/ünï\nx".encode()
    view = wandb_manifest([("l", link)])["contents"]["l"]
    assert view == {"digest": digest_of(target), "size": len(target),
                    "extra": {"alg": "XXH128", "symlink": "../data/ünï\nx"}}
    assert artifact_digest([("l", link)]) == artifact_digest([("l", file_entry(target))])
    assert not link.same_content(file_entry(target)) and link.same_content(SymlinkEntry(link.target))


@pytest.mark.parametrize("target", ["", "a\0b", "x" * 4096, "bad\udce9", 5])
def test_invalid_symlink_targets(target):
    with pytest.raises(InvalidNameError):
        SymlinkEntry(target)


def test_mtime_must_be_an_integer():
    with pytest.raises(CorruptStoreError, match="mtime_ns"):
        FileEntry.from_json({"type": "file", "digest": digest_of(b""), "size": 0,
                             "extra": {"alg": "XXH128", "mtime_ns": 1.5}})


# -- digests -----------------------------------------------------------------------
ODD = ["a\nb", "tab\there", "caf\u00e9", "cafe\u0301", "with space", "100%", "a:b", "#x", "-lead",
       "x" * 255, "é" * 127, "a-c", "a.c", "a0", "ab"]


def odd_changes() -> dict[str, FileEntry | SymlinkEntry]:
    changes: dict = {}
    for i, name in enumerate(ODD):
        changes[name] = file_entry(name.encode(), i)
        changes[f"sub/{name}"] = file_entry(b"sub" + name.encode())
        changes[f"dirs/{name}/inner"] = file_entry(b"inner" + name.encode()) if i % 2 else SymlinkEntry(name)
    deep = "/".join(f"d{i}" for i in range(60))
    changes[f"{deep}/leaf\nx"] = file_entry(b"deep")
    return changes


def test_tree_digest_equals_flat_digest_over_odd_names(reg):
    changes = odd_changes()
    root = apply_changes(reg, None, changes)
    flat = artifact_digest(changes.items())
    assert artifact_digest(walk(reg, root.tree)) == flat
    assert TreeDigests(reg).digest(root.tree) == flat
    assert dict(walk(reg, root.tree)) == changes


def test_mtimes_do_not_change_any_digest(reg):
    plain = {"a": file_entry(b"1"), "d/b": file_entry(b"2")}
    timed = {p: e.with_mtime(123 + i) for i, (p, e) in enumerate(plain.items())}
    r1, r2 = apply_changes(reg, None, plain), apply_changes(reg, None, timed)
    assert r1.tree != r2.tree
    assert TreeDigests(reg).digest(r1.tree) == TreeDigests(reg).digest(r2.tree) == artifact_digest(plain.items())


# -- commits ----------------------------------------------------------------------
def commit(reg: Registry, changes: dict) -> tuple[int, bool]:
    root = apply_changes(reg, None, changes)
    info, created = reg.commit(P, "c", "dataset", root, artifact_digest(walk(reg, root.tree)))
    return info.version, created


def test_a_commit_differing_only_in_mtimes_is_unchanged(reg):
    assert commit(reg, {"a": file_entry(b"1", 10)}) == (0, True)
    assert commit(reg, {"a": file_entry(b"1", 20)}) == (0, False)
    assert commit(reg, {"a": file_entry(b"1")}) == (0, False)
    # a symlink whose target equals a file's bytes has the same W&B digest but is another version
    assert commit(reg, {"a": SymlinkEntry("1")}) == (1, True)
    assert commit(reg, {"a": SymlinkEntry("1")}) == (1, False)
    assert commit(reg, {"a": SymlinkEntry("2")}) == (2, True)


def test_a_file_below_a_symlink_name_is_refused(reg):
    root = apply_changes(reg, None, {"l": SymlinkEntry("/etc")})
    with pytest.raises(PathConflictError, match="both a file and a directory"):
        apply_changes(reg, root.tree, {"l/passwd": file_entry(b"x")})


def test_version_folders_show_symlinks_and_file_mtimes(reg, store_url, tmp_path):
    need_fuse()
    for data in (b"hello", b"o"):
        reg.put_blob(xxhash.xxh3_128_hexdigest(data), data)
    commit(reg, {"f": file_entry(b"hello", 1_600_000_000_123_456_789), "old": file_entry(b"o"),
                 "d/rel": SymlinkEntry("../f"), "abs": SymlinkEntry("/nonexistent/x"),
                 "self": SymlinkEntry("self")})
    info = reg.get(P, "c", "v0")
    with mounted(store_url, tmp_path / "mnt", "--project", P) as m:
        root = m.p("c", "c:v0")
        assert os.stat(os.path.join(root, "f")).st_mtime_ns == 1_600_000_000_123_456_789
        assert os.stat(os.path.join(root, "old")).st_mtime_ns == iso_ns(info.created_at)
        assert os.readlink(os.path.join(root, "d/rel")) == "../f"
        with open(os.path.join(root, "d/rel"), "rb") as f:  # the kernel follows it inside the mount
            assert f.read() == b"hello"
        assert os.readlink(os.path.join(root, "abs")) == "/nonexistent/x"
        st = os.lstat(os.path.join(root, "self"))
        assert stat.S_ISLNK(st.st_mode) and st.st_size == 4
        assert sorted(os.listdir(root)) == ["abs", "d", "f", "old", "self"]
