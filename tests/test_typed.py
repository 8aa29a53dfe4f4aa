"""Artifact.add(obj, name) / get(name): typed objects in open formats."""
from __future__ import annotations

import subprocess
import sys

import pytest

from artifactfs import Api, Artifact, ArtifactFinalizedError, ArtifactNotLoggedError


def test_add_and_get_each_type(env):
    import numpy as np
    import pandas as pd
    from PIL import Image

    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    image = Image.new("RGB", (4, 3), (10, 20, 30))
    art = Artifact("objs", "dataset")
    entries = [art.add(frame, "tables/frame"), art.add(array, "arr"), art.add({"k": [1, 2]}, "cfg"),
               art.add([1, "two"], "list.json"), art.add("hello", "note"), art.add(b"\x00\x01", "raw.bin"),
               art.add(image, "img")]
    assert [e.path for e in entries] == ["tables/frame.parquet", "arr.npy", "cfg.json", "list.json",
                                         "note.txt", "raw.bin", "img.png"]
    with pytest.raises(ArtifactNotLoggedError):
        art.get("cfg")
    art.save()
    got = Api().artifact("objs:latest")
    assert got.get("tables/frame").equals(frame)
    out = got.get("arr.npy")
    assert out.dtype == np.float32 and (out == array).all()
    assert got.get("cfg") == {"k": [1, 2]}
    assert got.get("list.json") == [1, "two"]
    assert got.get("note") == "hello"
    assert got.get("raw.bin") == b"\x00\x01"
    assert got.get("img").tobytes() == image.tobytes() and got.get("img").size == (4, 3)
    assert got.get("missing") is None
    with pytest.raises(ArtifactFinalizedError):
        got.add({"a": 1}, "x")


def test_overwrite_and_unknown_types(env):
    art = Artifact("objs", "dataset")
    art.add({"v": 1}, "cfg")
    with pytest.raises(ValueError, match="overwrite"):
        art.add({"v": 2}, "cfg")
    art.add({"v": 2}, "cfg", overwrite=True)
    with pytest.raises(TypeError, match="cannot add an object of type .*object"):
        art.add(object(), "thing")
    with pytest.raises(TypeError, match="JSON"):
        art.add({"f": {1, 2}}, "bad")
    art.save()
    assert Api().artifact("objs:latest").get("cfg") == {"v": 2}


def test_optional_dependencies_are_imported_only_when_used(env):
    code = ("import sys, artifactfs; a = artifactfs.Artifact('o', 'dataset'); a.add({'x': 1}, 'c'); a.save(); "
            "assert artifactfs.Api().artifact('o:latest').get('c') == {'x': 1}; "
            "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
