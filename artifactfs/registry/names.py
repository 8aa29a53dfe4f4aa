"""Validation of every name that reaches the store or the local disk.

One place decides what is a valid collection/alias/tag/project name and what is a
safe entry path, so neither the API, the CLI nor the mount can write outside a
target directory because of a crafted manifest or name."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidNameError, NotFoundError, shown

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_VERSION = re.compile(r"^v(\d+)$")
MAX_NAME = 128
NAME_MAX = 255  # bytes of one file name (POSIX NAME_MAX on Linux)
RESERVED_TYPES = ("job",)
RESERVED_TYPE_PREFIXES = ("wandb-",)


def check_name(name: str, what: str = "name") -> str:
    """Collection, project, alias and tag names: letters, digits, '_', '-', '.'."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use letters, digits, '_', '-' and '.'"
        )
    if len(name) > MAX_NAME:
        raise InvalidNameError(f"invalid {what} {name!r}: longer than {MAX_NAME} characters")
    return name


def check_alias(alias: str, collection: str | None = None) -> str:
    """Aliases may not look like a version number (that would shadow vN).  Given
    the `collection`, also refuse an alias whose mount entries `COLLECTION:ALIAS`
    and `COLLECTION@ALIAS` would be longer than a file name may be (NAME_MAX,
    255 bytes): no program could reach them."""
    check_name(alias, "alias")
    if _VERSION.match(alias):
        raise InvalidNameError(f"invalid alias {alias!r}: it looks like a version number")
    if collection is not None and not fits_name_max(f"{collection}:{alias}"):
        raise InvalidNameError(f"invalid alias {alias!r}: {collection}:{alias} would be longer than "
                               f"{NAME_MAX} bytes, which no file name may be")
    return alias


def fits_name_max(name: str) -> bool:
    """Can `name` be one file name (at most NAME_MAX bytes of UTF-8)?"""
    return len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


def check_type(type_: str) -> str:
    check_name(type_, "type")
    if type_ in RESERVED_TYPES or type_.startswith(RESERVED_TYPE_PREFIXES):
        raise InvalidNameError(f"artifact type {type_!r} is reserved")
    return type_


def parse_version(text: str) -> int | None:
    """'v12' -> 12; anything else -> None."""
    m = _VERSION.match(text)
    return int(m.group(1)) if m else None


def check_path(path: str) -> str:
    """An entry path inside an artifact: relative, '/'-separated, no '..', '.', empty
    component, NUL or backslash.  Returned unchanged when valid."""
    if not isinstance(path, str) or not path:
        raise InvalidNameError("invalid path: empty")
    if "\0" in path or "\\" in path:
        raise InvalidNameError(f"invalid path {path!r}: NUL or backslash")
    if path.startswith("/"):
        raise InvalidNameError(f"invalid path {path!r}: absolute")
    for part in path.split("/"):
        check_component(part, path)
    return path


def check_component(part: str, path: str | None = None) -> str:
    """One path component (a file or folder name)."""
    where = path if path is not None else part
    if part in ("", ".", ".."):
        raise InvalidNameError(f"invalid path {where!r}: empty, '.' or '..' component")
    if "/" in part or "\0" in part or "\\" in part:
        raise InvalidNameError(f"invalid path {where!r}: '/', NUL or backslash in a name")
    try:
        size = len(part.encode())
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid path {shown(where)}: a name that is not valid UTF-8") from None
    if size > NAME_MAX:
        raise InvalidNameError(f"invalid path {where!r}: a name longer than {NAME_MAX} bytes")
    return part


def normalize_path(path: str) -> str:
    """Turn a user-given artifact path into canonical form as W&B does ('./a//b' ->
    'a/b'); an absolute path is refused (InvalidNameError, a ValueError), as in W&B."""
    if isinstance(path, str) and path.startswith("/"):
        raise InvalidNameError(f"invalid path {path!r}: artifact paths are relative (no leading '/')")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return check_path("/".join(parts))


def in_folder(path: str, folder: str) -> bool:
    """Is `path` the entry `folder` or below it?  The CLI's meaning of a path
    prefix (`files NAME a/b`, `get --prefix a/b`): 'a/b' selects 'a/b' and 'a/b/...',
    not 'a/b.txt' or 'a/bb'.  ('' selects everything.)  Artifact.download's
    path_prefix is W&B's raw str.startswith instead."""
    folder = folder.strip("/")
    return not folder or path == folder or path.startswith(folder + "/")


@dataclass(frozen=True)
class Ref:
    """An artifact name as users write it: '[[entity/]project/]collection[:alias|:vN]'."""

    project: str | None  # None: the caller's default project
    collection: str
    alias: str | None  # an alias, 'vN', or None (W&B then means latest)
    entity: str | None = None  # given in 'entity/project/name': must be the store's (check_entity)

    def check_entity(self, entity: str) -> None:
        """NotFoundError unless the entity given (if any) is `entity`, the store's
        name: W&B looks the entity up, and another one is not found."""
        if self.entity is not None and self.entity != entity:
            raise NotFoundError(f"entity {self.entity!r} is not this store's ({entity!r})")


def split_ref(ref: str) -> Ref:
    """Parse '[[entity/]project/]name[:alias|:vN]'; InvalidNameError for a bad one."""
    project = entity = None
    if "/" in ref:
        parts = ref.split("/")
        if len(parts) == 3:  # entity/project/name: the entity is the store itself
            entity, parts = parts[0], parts[1:]
        if len(parts) != 2:
            raise InvalidNameError(f"invalid artifact name {ref!r}")
        project, ref = parts
        check_name(project, "project")
    name, _, alias = ref.partition(":")
    check_name(name, "collection name")
    if _ and not alias:
        raise InvalidNameError(f"invalid artifact name {ref!r}: empty alias after ':'")
    if alias:
        if parse_version(alias) is None:
            check_alias(alias)
    return Ref(project, name, alias or None, entity)
