"""Advancing a draft (drafts/advance.py) after its commit or to another writer's
newer latest: it then shows that version exactly, plus the user's changes; a
deleted base counts as gone; a draft that cannot advance still reports the
published version."""
from __future__ import annotations

import errno

import pytest
from draft_helpers import publish, version_files
from test_draftcommit import BASE, changes_of, draft_of, expected, pub, reg, write  # noqa: F401 (fixtures)

from artifactfs.api.lifecycle import delete_version
from artifactfs.drafts import commit
from artifactfs.drafts.advance import advance
from artifactfs.drafts.commit import commit_draft
from artifactfs.drafts.lifecycle import base_gone
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


def test_a_draft_whose_base_was_deleted_shows_what_its_commit_published(reg, pub):
    """The draft's base (its own last commit) is deleted, then the draft commits
    another change: the deletion counts as the other side's change (what only the
    deleted version had is not published), and the draft then shows exactly the
    new version, so its next commit publishes nothing again.  An untouched draft
    on a deleted base shows the latest left; a new mount sets a draft on a
    deleted base aside (lifecycle.base_gone)."""
    publish(reg, pub, "ds", {"x": b"x"})
    d = draft_of(reg)
    write(d, "a.txt", b"a")
    assert commit_draft(reg, d.draft).line == "ds:v1"
    write(d, "b.txt", b"b")
    delete_version(reg, "proj", "ds", 1)
    assert base_gone(reg, d.draft)
    assert commit_draft(reg, d.draft).line == "ds:v2"
    assert version_files(reg, "ds", 2) == expected({"x": b"x", "b.txt": b"b"})
    assert sorted(d.listdir()) == ["b.txt", "x"]
    assert commit_draft(reg, d.draft).line == "ds:v2 (unchanged)"
    delete_version(reg, "proj", "ds", 2)  # untouched now: it follows the latest left, v0
    info = reg.version("proj", "ds", 0)
    advance(d.draft, 0, info.root, iso_ns(info.created_at), None)
    assert sorted(d.listdir()) == ["x"] and changes_of(reg, d) == {}


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
