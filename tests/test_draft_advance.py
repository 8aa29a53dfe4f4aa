"""Advancing a draft (drafts/advance.py) after its commit or to another writer's
newer latest: it then shows that version exactly, plus the user's changes; a
deleted base is no change of content; a draft that cannot advance still reports the
published version."""
from __future__ import annotations

import errno

import pytest
from draft_helpers import publish, version_files
from test_draftcommit import BASE, changes_of, draft_of, expected, pub, reg, write  # noqa: F401 (fixtures)

from artifactfs.api.gc import collect
from artifactfs.api.lifecycle import delete_version
from artifactfs.drafts import commit
from artifactfs.drafts.advance import advance
from artifactfs.drafts.commit import commit_draft
from artifactfs.drafts.lifecycle import base_gone
from artifactfs.errors import ArtifactfsError
from artifactfs.timestamps import iso_ns


@pytest.mark.parametrize("how", ["commit", "follow"])
def test_an_untouched_draft_shows_the_newer_latest_exactly(reg, pub, how):
    """A draft with nothing changed since its last commit, whose entries are all
    rows (a staged file, a chmod'ed one, a symlink, a hard link, a folder), moves
    to another writer's newer version: it shows that version exactly, and its
    next commit publishes nothing.  Before, those rows stayed and the next commit
    published them again, undoing the other writer's removals."""
    publish(reg, pub, "ds", {"keep": b"k"})
    d = draft_of(reg)
    write(d, "new.txt", b"mine")
    write(d, "exe", b"#!/bin/sh\n")
    d.chmod("exe", 0o755)
    d.symlink("new.txt", "link")
    write(d, "pair", b"two names")
    d.link("pair", "pair.hard")
    d.makedirs("sub/deeper")
    write(d, "sub/deeper/f", b"f")
    write(d, "changed", b"old")
    assert commit_draft(reg, d.draft).line == "ds:v1"
    assert not d.draft.dirty
    # another writer: removes everything but `keep` and `changed`, which it rewrites
    their = publish(reg, pub, "ds", {"new.txt": None, "exe": None, "link": None, "pair": None, "pair.hard": None,
                                    "sub/deeper/f": None, "changed": b"theirs"})
    assert version_files(reg, "ds", their) == expected({"keep": b"k", "changed": b"theirs"})
    if how == "commit":
        assert commit_draft(reg, d.draft).line == f"ds:v{their} (unchanged)"
    else:  # what the mount does by itself once it sees the newer latest (LiveDraft.follow)
        info = reg.version("proj", "ds", their)
        advance(d.draft, their, info.root, iso_ns(info.created_at), None)
    assert sorted(d.listdir()) == ["changed", "keep"]
    assert d.read("changed") == b"theirs"
    assert changes_of(reg, d) == {}
    assert commit_draft(reg, d.draft).line == f"ds:v{their} (unchanged)"
    assert reg.latest("proj", "ds") == their


def test_a_draft_whose_base_was_deleted_publishes_what_it_shows(reg, pub):
    """The draft's base (its own last commit) is deleted, then the draft commits
    another change: a deletion is not a change of content, so the new version
    holds everything the draft shows (the deleted version's files included) and
    the draft shows it with nothing changed.  An untouched draft whose base is
    deleted publishes it again when asked; a new mount sets a draft on a deleted
    base aside (lifecycle.base_gone)."""
    publish(reg, pub, "ds", {"x": b"x"})
    d = draft_of(reg)
    write(d, "a.txt", b"a")
    assert commit_draft(reg, d.draft).line == "ds:v1"
    write(d, "b.txt", b"b")
    delete_version(reg, "proj", "ds", 1)
    assert base_gone(reg, d.draft)
    assert commit_draft(reg, d.draft).line == "ds:v2"
    assert version_files(reg, "ds", 2) == expected({"x": b"x", "a.txt": b"a", "b.txt": b"b"})
    assert sorted(d.listdir()) == ["a.txt", "b.txt", "x"] and changes_of(reg, d) == {}
    assert commit_draft(reg, d.draft).line == "ds:v2 (unchanged)"
    delete_version(reg, "proj", "ds", 2)  # untouched now: it still shows v2, and a commit publishes it again
    assert commit_draft(reg, d.draft).line == "ds:v3"
    assert version_files(reg, "ds", 3) == expected({"x": b"x", "a.txt": b"a", "b.txt": b"b"})


def test_a_deleted_base_that_gc_removed_is_one_error_and_no_version(reg, pub):
    """No mount pinned the deleted base, and gc removed its blobs: the commit says
    so in one line, publishes nothing, and the draft stays as it was."""
    publish(reg, pub, "ds", {"x": b"x"})
    d = draft_of(reg)
    write(d, "big", bytes(range(256)) * 40000)
    assert commit_draft(reg, d.draft).line == "ds:v1"
    delete_version(reg, "proj", "ds", 0)
    delete_version(reg, "proj", "ds", 1)
    write(d, "b.txt", b"b")
    report = collect(reg, grace=0, keep_deleted=0)
    assert report.blobs > 0
    with pytest.raises(ArtifactfsError) as e:
        commit_draft(reg, d.draft)
    assert "its base ds:v1 was deleted and gc removed what it still shows" in str(e.value)
    assert "\n" not in str(e.value)
    assert reg.latest("proj", "ds") is None and reg.versions("proj", "ds", include_deleted=True) == [0, 1]
    assert sorted(d.listdir()) == ["b.txt", "big", "x"] and d.draft.dirty


def test_a_draft_that_cannot_move_onto_its_published_version_says_so_and_catches_up(reg, pub, monkeypatch):
    """Once the version is durable it is published, whatever happens next: if the
    draft cannot move onto it (its state dir is full: the step fails with ENOSPC,
    injected here), the commit still returns the version, with a note, and the
    draft's next commit finds nothing new."""
    publish(reg, pub, "ds", BASE)
    d = draft_of(reg)
    write(d, "a/x", b"mine")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "no space left for the draft's database")
    monkeypatch.setattr(commit, "advance", full)
    r = commit_draft(reg, d.draft)
    assert r.line == "ds:v1" and "could not move onto it (no space left" in (r.note or "")
    assert version_files(reg, "ds", 1) == expected(BASE, a__x=b"mine")
    monkeypatch.undo()
    assert d.draft.state.base == 0 and d.read("a/x") == b"mine"
    assert commit_draft(reg, d.draft).line == "ds:v1 (unchanged)"
    assert d.draft.state.base == 1 and not d.draft.dirty
