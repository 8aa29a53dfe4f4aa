"""delete(), TTL and links/portfolios through the Python API."""
from __future__ import annotations

import datetime as dt

import pytest
from core_util import write_files

from artifactfs import Api, Artifact, ArtifactNotLoggedError, NotFoundError
from artifactfs.api.lifecycle import HasAliasesError, format_duration, parse_duration, set_default_ttl


def log(name: str, files: dict, tmp_path, type_: str = "model", aliases=()) -> Artifact:
    art = Artifact(name, type_)
    art.add_dir(write_files(str(tmp_path / f"src-{name}-{len(list(tmp_path.iterdir()))}"), files))
    art.aliases = list(aliases)
    return art.save()


# -- delete -----------------------------------------------------------------------
def test_delete_refuses_with_aliases_then_marks_deleted(env, tmp_path):
    v0 = log("m", {"w": "0"}, tmp_path, aliases=["best"])
    v1 = log("m", {"w": "1"}, tmp_path)
    with pytest.raises(HasAliasesError, match="has aliases best; pass delete_aliases=True to remove them too$"):
        v0.delete()
    assert Api().artifact("m:best").version == "v0"  # nothing changed
    v0.delete(delete_aliases=True)
    assert v0.state == "DELETED"
    api = Api()
    with pytest.raises(NotFoundError, match="deleted"):
        api.artifact("m:v0")
    with pytest.raises(NotFoundError):
        api.artifact("m:best")
    assert [a.version for a in api.artifact_versions("m")] == ["v1"]
    v1.delete()  # only 'latest', which is not an alias of its own
    with pytest.raises(NotFoundError):
        api.artifact("m:latest")
    v2 = log("m", {"w": "2"}, tmp_path)
    assert v2.version == "v2"  # numbers are never reused
    assert api.artifact("m:latest").version == "v2"


def test_delete_needs_a_logged_artifact():
    with pytest.raises(ArtifactNotLoggedError):
        Artifact("x", "model").delete()


# -- TTL --------------------------------------------------------------------------
def test_ttl_custom_none_and_inherited_default(env, tmp_path):
    art = Artifact("m", "model")
    with pytest.raises(ArtifactNotLoggedError):
        art.ttl  # inherited: known only once saved
    art.add_dir(write_files(str(tmp_path / "a"), {"w": "0"}))
    art.save()
    assert art.ttl is None  # no project default
    set_default_ttl(art._reg(), "proj", 7 * 86400)
    assert Api().artifact("m:v0").ttl == dt.timedelta(days=7)
    art = Api().artifact("m:v0")
    art.ttl = None  # opt out of the default
    art.save()
    assert Api().artifact("m:v0").ttl is None
    art.ttl = dt.timedelta(hours=5)
    art.save()
    assert Api().artifact("m:v0").ttl == dt.timedelta(hours=5)
    with pytest.raises(ValueError):
        art.ttl = dt.timedelta(seconds=-1)
    with pytest.raises(ValueError):
        art.ttl = 30  # not a timedelta


def test_parse_duration():
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("none") is None
    for bad in ("", "30", "d", "-1d", "1y", "1.5h", "0s", "0", "\u00b2d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for zero in ("0", "0s", " 0D "):
        assert parse_duration(zero, zero=True) == 0.0
    assert parse_duration("2w", zero=True) == 14 * 86400
    with pytest.raises(ValueError, match="use e.g. 30d, 12h, 90m, 2w, 0$"):
        parse_duration("none", zero=True, never=False)
    assert [format_duration(s) for s in (30 * 86400, 14 * 86400, 36 * 3600, 5400, 45, 1.5)] == \
        ["30d", "14d", "36h", "90m", "45s", "1.5s"]


# -- links and portfolios ----------------------------------------------------------------
def test_link_forms_versions_aliases_and_sources(env, tmp_path):
    v0 = log("m", {"w": "0"}, tmp_path)
    v1 = log("m", {"w": "1"}, tmp_path)
    l0 = v1.link("prod", aliases=["live"])
    assert (l0.is_link, l0.name, l0.version, l0.collection) == (True, "prod:v0", "v0", "prod")
    assert (l0.source_name, l0.source_version, l0.source_collection, l0.source_project) == ("m:v1", "v1", "m", "proj")
    assert l0.source_qualified_name == f"{l0.entity}/proj/m:v1"
    assert l0.source_artifact.name == "m:v1" and not l0.source_artifact.is_link
    assert l0.digest == v1.digest and l0.files()[0].path == "w"
    l1 = v0.link(f"{v0.entity}/proj/prod")  # entity/project/portfolio
    assert l1.version == "v1"  # the portfolio's own numbering
    assert v1.link("proj/prod").version == "v0"  # the same source again: its existing link
    other = v0.link("other/bench")
    assert other.project == "other"
    assert Api().artifact("prod:live").source_name == "m:v1"
    assert sorted(a.qualified_name for a in v0.linked_artifacts) == sorted(
        [f"{v0.entity}/proj/prod:v1", f"{v0.entity}/other/bench:v0"])
    assert l0.linked_artifacts == []
    assert (v1.is_link, v1.source_artifact is v1) == (False, True)
    with pytest.raises(ValueError, match="entity"):
        v0.link("someone-else/proj/prod")
    with pytest.raises(ValueError):
        v0.link("a/b/c/d")


def test_model_registry_and_delete_of_a_link_removes_only_the_link(env, tmp_path):
    v0 = log("m", {"w": "0"}, tmp_path)
    reg_link = v0.link("model-registry/classifier", aliases=["staging"])
    assert reg_link.project == "model-registry" and reg_link.name == "classifier:v0"
    reg_link.delete()  # delete_aliases is ignored for a link
    api = Api()
    assert api.artifact("m:v0").state == "COMMITTED"
    with pytest.raises(NotFoundError):
        api.artifact("model-registry/classifier:staging")
    assert v0.linked_artifacts == []
    again = v0.link("model-registry/classifier")
    assert again.version == "v1"  # a new link, a new number
    again.unlink()
    with pytest.raises(ValueError, match="not a link"):
        v0.unlink()


def test_deleting_a_source_deletes_its_links(env, tmp_path):
    v0 = log("m", {"w": "0"}, tmp_path)
    v0.link("prod")
    v0.delete()
    with pytest.raises(NotFoundError):
        Api().artifact("prod:v0")


def test_a_portfolio_and_a_collection_do_not_mix(env, tmp_path):
    v0 = log("m", {"w": "0"}, tmp_path)
    log("plain", {"x": "1"}, tmp_path)
    with pytest.raises(ValueError, match="not a portfolio"):
        v0.link("plain")
    v0.link("prod")
    art = Artifact("prod", "model")
    art.add_dir(write_files(str(tmp_path / "p"), {"x": "2"}))
    with pytest.raises(ValueError, match="portfolio"):
        art.save()
