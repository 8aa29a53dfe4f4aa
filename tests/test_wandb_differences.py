"""The smaller W&B behaviours a new user tries: path normalisation,
absolute names, entities, get_path."""
from __future__ import annotations

import pytest

from artifactfs import Api, Artifact, NotFoundError
from core_util import write_files


def test_names_are_normalised_and_absolute_names_refused(env, tmp_path):
    src = write_files(str(tmp_path / "src"), {"f": "x"})
    art = Artifact("d", "dataset")
    with pytest.raises(ValueError, match="relative"):
        art.add_file(f"{src}/f", name="/abs")
    with pytest.raises(ValueError, match="relative"):
        art.add_dir(src, name="/abs")
    assert art.add_file(f"{src}/f", name="./c").path == "c"
    assert art.add_file(f"{src}/f", name="a//b").path == "a/b"
    art.save()
    got = Api().artifact("d:latest")
    assert [e.path for e in got.files()] == ["a/b", "c"]
    assert got.get_path("./a//b").path == "a/b"  # deprecated alias of get_entry
    with pytest.raises(KeyError):
        got.get_path("nope")


def test_the_entity_of_a_qualified_name_is_checked(env, tmp_path):
    art = Artifact("d", "dataset")
    art.add_dir(write_files(str(tmp_path / "src"), {"f": "x"}))
    art.save()
    api = Api()
    assert api.artifact(f"{art.entity}/proj/d:v0").qualified_name == art.qualified_name
    with pytest.raises(NotFoundError, match="otherentity"):
        api.artifact("otherentity/proj/d:v0")
    with pytest.raises(NotFoundError, match="otherentity"):
        api.artifact_versions("otherentity/proj/d")
