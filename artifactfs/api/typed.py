"""Typed objects in open formats: Artifact.add(obj, name) / get(name), the
counterpart of W&B's add()/get() of media objects.

  pandas.DataFrame -> NAME.parquet (pyarrow)     numpy.ndarray -> NAME.npy
  dict, list       -> NAME.json                  str           -> NAME.txt (UTF-8)
  bytes            -> NAME (as given)            PIL.Image     -> NAME.png

The suffix is added unless NAME already ends with it.  get() decodes by suffix
(anything else comes back as bytes).  pandas, pyarrow, numpy and Pillow are
imported only when an object of theirs is added or such a file is read."""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from typing import Any

from ..chunks import download
from ..errors import ArtifactfsError
from ..registry.names import normalize_path
from .entries import ManifestEntry

SUFFIXES = (".parquet", ".npy", ".json", ".txt", ".png")


def _is(obj: Any, module: str, dotted: str) -> bool:
    """isinstance(obj, module.dotted) without importing a module the caller never loaded."""
    mod = sys.modules.get(module)
    if mod is None:
        return False
    cls: Any = mod
    for part in dotted.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            return False
    return isinstance(obj, cls)


def encode(obj: Any) -> tuple[bytes, str]:
    """(bytes, suffix) of an object; TypeError for a type this cannot store."""
    if _is(obj, "pandas", "DataFrame"):
        buf = io.BytesIO()
        obj.to_parquet(buf)  # needs pyarrow (or fastparquet)
        return buf.getvalue(), ".parquet"
    if _is(obj, "numpy", "ndarray"):
        import numpy
        buf = io.BytesIO()
        numpy.save(buf, obj, allow_pickle=False)
        return buf.getvalue(), ".npy"
    if _is(obj, "PIL.Image", "Image"):
        buf = io.BytesIO()
        obj.save(buf, format="PNG")
        return buf.getvalue(), ".png"
    if isinstance(obj, (dict, list)):
        try:
            return json.dumps(obj, allow_nan=False).encode(), ".json"
        except (TypeError, ValueError) as e:
            raise TypeError(f"cannot store this {type(obj).__name__} as JSON: {e}") from None
    if isinstance(obj, str):
        return obj.encode(), ".txt"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj), ""
    raise TypeError(f"cannot add an object of type {type(obj).__module__}.{type(obj).__qualname__}: "
                    "add() takes a pandas DataFrame, a NumPy array, a dict or list, str, bytes or a "
                    "PIL image (use add_file() for anything else)")


def decode(path: str, data: bytes) -> Any:
    if path.endswith(".parquet"):
        import pandas
        return pandas.read_parquet(io.BytesIO(data))
    if path.endswith(".npy"):
        import numpy
        return numpy.load(io.BytesIO(data), allow_pickle=False)
    if path.endswith(".png"):
        from PIL import Image
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    if path.endswith(".json"):
        return json.loads(data)
    if path.endswith(".txt"):
        return data.decode()
    return data


class TypedObjects:
    """add()/get() for artifact.Artifact."""

    def add(self, obj: Any, name: str, overwrite: bool = False) -> ManifestEntry:
        """Store `obj` under `name` (+ its suffix); returns the manifest entry.
        Raises TypeError for an unsupported type, ValueError when `name` holds
        other content and not overwrite, ArtifactFinalizedError on a logged version."""
        self._need_draft()  # type: ignore[attr-defined]
        data, suffix = encode(obj)
        path = normalize_path(name)
        if suffix and not path.endswith(suffix):
            path += suffix
        tmpdir = tempfile.mkdtemp(prefix="artifactfs-add-")
        local = os.path.join(tmpdir, "object")
        try:
            with open(local, "xb") as f:
                f.write(data)
            return self.add_file(local, path, overwrite=overwrite)  # type: ignore[attr-defined]
        finally:
            os.unlink(local)
            os.rmdir(tmpdir)

    def get(self, name: str) -> Any:
        """The object stored under `name` (or `name` + a known suffix), or None when
        there is none.  Raises ArtifactNotLoggedError on an unsaved artifact."""
        info = self._need_logged("get()")  # type: ignore[attr-defined]
        path = normalize_path(name)
        for candidate in (path, *(path + s for s in SUFFIXES)):
            try:
                entry = self._entry(candidate)  # type: ignore[attr-defined]
            except KeyError:
                continue
            reg = self._reg()  # type: ignore[attr-defined]
            data = b"".join(bytes(download.read_chunk(reg, entry, i, candidate)) for i in range(len(entry.chunks)))
            if len(data) != entry.size:
                raise ArtifactfsError(f"{candidate}: its bytes are not in the store (a reference?)")
            self._used(info)  # type: ignore[attr-defined]
            return decode(candidate, data)
        return None
