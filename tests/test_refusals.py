"""Refused before anything happens, and damage named in one line: `sync --alias`
with an alias that does not fit one of the collections commits none of them; a
damaged version record (the one `latest` names) makes `get NAME:latest` fail with
one line naming the record, while other versions and aliases keep working."""
from __future__ import annotations

import errno
import json
import os

import pytest
from draft_helpers import publish
from mountutil import cli, mount_factory  # noqa: F401  (fixture)

from artifactfs.registry.versions import Registry

LONG = "L" * 128


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    reg = Registry.open(url, create=True)
    publish(reg, str(tmp_path / "pub"), "ds", {"f": b"zero"})
    publish(reg, str(tmp_path / "pub"), "ds", {"f": b"one"})
    publish(reg, str(tmp_path / "pub"), LONG, {"f": b"long"})
    reg.set_alias("proj", "ds", "best", 1)
    return url


def test_sync_refuses_an_alias_that_does_not_fit_every_collection_before_committing(store, mount_factory):
    m = mount_factory(store)
    for name in ("ds", LONG):
        with open(m.p(name, "draft", "new"), "wb") as f:
            f.write(b"new")
    alias = "a" * 127                            # ds:aaa... fits in 255 bytes, LLL...:aaa... does not
    done = cli("sync", m.path, "--alias", alias, env=m.env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "255 bytes" in done.stderr and "nothing committed" in done.stderr
    reg = Registry.open(store)
    assert reg.versions("proj", "ds") == [0, 1] and reg.versions("proj", LONG) == [0]
    done = cli("sync", m.path, "--alias", "a" * 100, env=m.env, timeout=120)
    assert done.returncode == 0 and sorted(done.stdout.split()) == sorted([f"{LONG}:v1", "ds:v2"]), done.stderr
    assert reg.get("proj", "ds", "a" * 100).version == 2


@pytest.mark.parametrize("damage", [b"[]", b"", b"{\"size\": ", "size", "created_at", "tags"])
def test_a_damaged_latest_record_is_named_in_one_line(store, tmp_path, damage):
    reg = Registry.open(store)
    key = os.path.join(store, "projects/proj/collections/ds/versions/v1.json")
    if isinstance(damage, str):                 # a record that parses, with a member of the wrong type
        rec = json.load(open(key))
        rec[damage] = {"size": "x", "created_at": 5, "tags": 7}[damage]
        damage = json.dumps(rec).encode()
    with open(key, "wb") as f:
        f.write(damage)
    base = ["--store", store, "--project", "proj"]
    for ref in ("ds:latest", "ds:best", "ds"):
        done = cli(*base, "get", ref, str(tmp_path / "out"))
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        line = done.stderr.splitlines()[-1]
        assert line.startswith(f"Error: {ref if ':' in ref else 'ds:latest'} is v1, whose version record "
                               "projects/proj/collections/ds/versions/v1.json is damaged: "), line
    done = cli(*base, "get", "ds:v0", str(tmp_path / "v0"))
    assert done.returncode == 0 and open(tmp_path / "v0" / "f", "rb").read() == b"zero", done.stderr
    done = cli(*base, "ls", "ds")
    assert done.returncode == 0 and "Traceback" not in done.stderr and "v0" in done.stdout, done.stderr
    assert reg.version_infos("proj", "ds")[0].version == 0


def test_damaged_attributes_and_aliases_records(store, tmp_path):
    base = ["--store", store, "--project", "proj"]
    folder = os.path.join(store, "projects/proj/collections/ds")
    with open(os.path.join(folder, "versions/v1.attrs.json"), "w") as f:
        json.dump({"tags": 7, "description": "kept out"}, f)   # ignored as a whole, the record shows
    done = cli(*base, "ls", "ds")
    assert done.returncode == 0 and "Traceback" not in done.stderr and "v1" in done.stdout, done.stderr
    assert Registry.open(store).version("proj", "ds", 1).description is None
    with open(os.path.join(folder, "aliases.json"), "w") as f:
        f.write("[1]")
    done = cli(*base, "get", "ds:best", str(tmp_path / "out"))
    assert done.returncode == 1 and done.stderr.splitlines()[-1] == (
        "Error: alias ds:best not found (the aliases record projects/proj/collections/ds/aliases.json is damaged: "
        "not a JSON object)"), done.stderr
    assert cli(*base, "get", "ds:latest", str(tmp_path / "out")).returncode == 0


def test_a_mount_lists_the_versions_beside_a_damaged_latest_record(store, mount_factory):
    """The draft is made from latest, which cannot be read: draft/ is EIO, and the
    collection folder still lists (without it) and reads its other versions."""
    with open(os.path.join(store, "projects/proj/collections/ds/versions/v1.json"), "wb") as f:
        f.write(b"[]")
    m = mount_factory(store)
    assert sorted(os.listdir(m.p("ds"))) == ["ds:best", "ds:latest", "ds:v0"]
    assert open(m.p("ds", "ds:v0", "f"), "rb").read() == b"zero"
    with pytest.raises(OSError) as e:
        os.listdir(m.p("ds", "draft"))
    assert e.value.errno == errno.EIO
    assert "versions/v1.json is damaged: not a JSON object but list" in m.log
    assert open(m.p(LONG, f"{LONG}:latest", "f"), "rb").read() == b"long"
