"""Name and path validation: the one gate between user input / store data and disk."""
import pytest

from artifactfs.errors import InvalidNameError
from artifactfs.registry.names import (
    Ref,
    check_alias,
    check_component,
    check_name,
    check_path,
    check_type,
    normalize_path,
    parse_version,
    split_ref,
)


@pytest.mark.parametrize("name", ["data", "my-data_1.0", "A", "x" * 128])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "a:b", "é", "a\0", "x" * 129, None])
def test_invalid_names(name):
    with pytest.raises(InvalidNameError):
        check_name(name)


def test_alias_may_not_look_like_a_version():
    assert check_alias("best") == "best"
    with pytest.raises(InvalidNameError, match="version number"):
        check_alias("v3")


@pytest.mark.parametrize("type_", ["job", "wandb-history", "wandb-anything"])
def test_reserved_types(type_):
    with pytest.raises(InvalidNameError, match="reserved"):
        check_type(type_)


def test_ordinary_types():
    assert check_type("dataset") == "dataset"
    assert check_type("model") == "model"


@pytest.mark.parametrize("path", ["a", "a/b/c.txt", "dir.with.dots/f", " spaced name"])
def test_valid_paths(path):
    assert check_path(path) == path


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b",
                                  "a\0b", "x/" + "y" * 256])
def test_invalid_paths(path):
    with pytest.raises(InvalidNameError):
        check_path(path)


def test_component_refuses_separators():
    for bad in ("a/b", "..", ".", "", "a\\b", "a\0"):
        with pytest.raises(InvalidNameError):
            check_component(bad)


def test_normalize_path():
    assert normalize_path("./a//b/") == "a/b"
    with pytest.raises(InvalidNameError):
        normalize_path("a/../../b")
    with pytest.raises(InvalidNameError):
        normalize_path("a\\b")


def test_parse_version():
    assert parse_version("v0") == 0
    assert parse_version("v12") == 12
    assert parse_version("latest") is None
    assert parse_version("v") is None


@pytest.mark.parametrize("ref,expected", [
    ("data", Ref(None, "data", None)),
    ("data:v3", Ref(None, "data", "v3")),
    ("data:best", Ref(None, "data", "best")),
    ("proj/data:latest", Ref("proj", "data", "latest")),
    ("store/proj/data:v1", Ref("proj", "data", "v1", "store")),
])
def test_split_ref(ref, expected):
    assert split_ref(ref) == expected


@pytest.mark.parametrize("ref", ["a/b/c/d", "data:", "da ta", "p!/data", "data:bad alias", "../data"])
def test_split_ref_invalid(ref):
    with pytest.raises(InvalidNameError):
        split_ref(ref)


@pytest.mark.parametrize("path, folder, inside", [
    ("a/b/c", "a/b", True), ("a/b", "a/b", True), ("a/b.txt", "a/b", False), ("a/bb/d", "a/b", False),
    ("a/b-c", "a/b", False), ("a/b/c", "a/b/", True), ("a/b/c", "/a/b", True), ("x", "", True),
])
def test_in_folder_means_the_file_or_folder(path, folder, inside):
    from artifactfs.registry.names import in_folder
    assert in_folder(path, folder) is inside


def test_names_in_messages_are_escaped_and_non_utf8_is_refused_by_name():
    from artifactfs.errors import shown
    assert shown("a\nb\tc") == "a\\nb\\tc" and shown("bad\udce9") == "bad\\xe9" and shown("ünï cödé") == "ünï cödé"
    with pytest.raises(InvalidNameError, match=r"bad\\xe9.*not valid UTF-8"):
        check_path("dir/bad\udce9")
