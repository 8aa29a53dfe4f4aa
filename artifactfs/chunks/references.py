"""References: artifact entries whose bytes stay at a URI (W&B's
`Artifact.add_reference`), resolved when added and read back, lazily and
checked, when downloaded or read through the mount.

What is recorded per scheme (FileEntry with `ref` = the URI, no blobs):
- file://  a file, or every file below a directory: size, the W&B XXH128
  digest of the bytes, and `extra.mtime_ns` (the file's mtime when hashed).
- http(s)://  size from Content-Length, digest = the ETag (quotes stripped,
  as W&B does), `extra.etag` = the ETag as sent.
- s3://  an object, or every object below a prefix (at most `max_objects`):
  size, digest = ETag, `extra.etag`, and `extra.versionID` in a versioned bucket.
- checksum=False, or any other scheme: the URI only; digest = base64 XXH128
  of the URI, size unknown (`extra.size_unknown`); such entries cannot be read.

Reading never returns bytes other than the recorded ones: http(s) and s3
ranged GETs carry `If-Match: <etag>` (and the version id), so a changed
source answers 412; a file:// source must still have the recorded size and
mtime around every read, and a whole-file read (download) checks the digest.
A changed source raises ReferenceChanged, a vanished one ReferenceGone."""
from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

import xxhash

from ..errors import ArtifactfsError, DigestMismatchError, ObjectNotFound, UsageError
from ..registry.manifest import CHUNK_SIZE, FileEntry, b64_digest
from ..registry.names import normalize_path
from .upload import upload_file

DEFAULT_MAX_OBJECTS = 10_000_000
HTTP_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)


class ReferenceChanged(DigestMismatchError):
    """The source of a reference no longer holds the recorded bytes."""


class ReferenceGone(ObjectNotFound):
    """The source of a reference no longer exists."""


class ReferenceUnreadable(ArtifactfsError):
    """A reference that records only its URI (or a scheme we cannot read)."""


@dataclass(frozen=True)
class Resolved:
    """One entry a reference adds: its path in the artifact and its FileEntry."""

    path: str
    entry: FileEntry


def _uri_only(uri: str) -> FileEntry:
    return FileEntry(b64_digest(xxhash.xxh3_128_digest(uri.encode())), 0, (), ref=uri,
                     extra={"size_unknown": True})


def _join(name: str | None, rel: str) -> str:
    return normalize_path(f"{name}/{rel}" if name else rel)


def resolve(uri: str, name: str | None = None, checksum: bool = True,
            max_objects: int | None = None) -> list[Resolved]:
    """The entries `uri` adds, named `name` (a single object) or below `name`
    (a directory or prefix).  Raises ReferenceGone for a source that does not exist,
    ArtifactfsError for more than `max_objects` objects or a source without an ETag, and
    UsageError for a string without a scheme (W&B would record it as a URI; here it is
    almost always a mistyped local path, which is file:///abs/path)."""
    p = urlparse(uri)
    if not p.scheme:
        raise UsageError(f"reference {uri!r} is not a URI: give scheme://..., "
                               f"e.g. file:///abs/path for a local file")
    limit = DEFAULT_MAX_OBJECTS if max_objects is None else max_objects
    base = posixpath.basename(unquote(p.path).rstrip("/")) or p.netloc
    if not checksum or p.scheme not in ("file", "http", "https", "s3"):
        return [Resolved(normalize_path(name or base), _uri_only(uri))]
    if p.scheme == "file":
        return _resolve_file(unquote(p.path), name, base, limit, uri)
    if p.scheme == "s3":
        return _resolve_s3(p.netloc, p.path.lstrip("/"), name, base, limit, uri)
    return [Resolved(normalize_path(name or base), _resolve_http(uri))]


def _too_many(uri: str, limit: int) -> ArtifactfsError:
    return ArtifactfsError(f"{uri} holds more than max_objects={limit} objects")


# -- file:// --------------------------------------------------------------------
def _file_entry(path: str) -> FileEntry:
    before = os.stat(path)
    hashed = upload_file(None, path)
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise ArtifactfsError(f"{path} changed while it was being read")
    return FileEntry(hashed.digest, hashed.size, (), ref="file://" + quote(os.path.abspath(path)),
                     extra={"alg": "XXH128", "mtime_ns": after.st_mtime_ns})


def _resolve_file(path: str, name: str | None, base: str, limit: int, uri: str) -> list[Resolved]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ReferenceGone(f"reference {uri}: no such file or directory") from None
    if not stat.S_ISDIR(st.st_mode):
        return [Resolved(normalize_path(name or base), _file_entry(path))]
    out = []
    for top, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(top, f)
            if not os.path.isfile(full):
                continue
            if len(out) >= limit:
                raise _too_many(uri, limit)
            out.append(Resolved(_join(name, os.path.relpath(full, path).replace(os.sep, "/")), _file_entry(full)))
    return out


# -- http(s):// -----------------------------------------------------------------
def _resolve_http(uri: str) -> FileEntry:
    import requests  # only where http references are used: importing it costs ~70 ms of every command

    try:
        r = requests.head(uri, allow_redirects=True, timeout=HTTP_TIMEOUT)
    except requests.RequestException as e:
        raise ArtifactfsError(f"reference {uri}: {type(e).__name__}") from None
    if r.status_code in (404, 410):
        raise ReferenceGone(f"reference {uri}: not found (HTTP {r.status_code})")
    if r.status_code >= 400:
        raise ArtifactfsError(f"reference {uri}: HTTP {r.status_code}")
    etag, length = r.headers.get("ETag"), r.headers.get("Content-Length")
    if not etag or length is None:
        raise ArtifactfsError(f"reference {uri}: the server sends no ETag or Content-Length to check "
                              "reads against; add it with checksum=False to record the URI only")
    return FileEntry(etag.strip('"'), int(length), (), ref=uri, extra={"etag": etag})


# -- s3:// ----------------------------------------------------------------------
def _s3_client() -> Any:
    from ..store.s3 import _client  # boto3 is optional: imported only for s3:// references
    from ..store.s3config import S3Options
    options = S3Options.from_env()
    return _client(options, options.attempts)


def _s3_entry(bucket: str, key: str, size: int, etag: str, version: str | None) -> FileEntry:
    extra: dict[str, object] = {"etag": etag}
    if version and version != "null":
        extra["versionID"] = version
    return FileEntry(etag.strip('"'), size, (), ref=f"s3://{bucket}/{key}", extra=extra)


def _resolve_s3(bucket: str, key: str, name: str | None, base: str, limit: int, uri: str) -> list[Resolved]:
    import botocore.exceptions as bexc
    client = _s3_client()
    try:
        if key and not key.endswith("/"):
            try:
                h = client.head_object(Bucket=bucket, Key=key)
                return [Resolved(normalize_path(name or base),
                                 _s3_entry(bucket, key, h["ContentLength"], h["ETag"], h.get("VersionId")))]
            except bexc.ClientError as e:
                if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
        prefix = key if not key or key.endswith("/") else key + "/"
        versioned = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
        out: list[Resolved] = []
        for k, size, etag, version in _s3_objects(client, bucket, prefix, versioned):
            if len(out) >= limit:
                raise _too_many(uri, limit)
            out.append(Resolved(_join(name, k[len(prefix):]), _s3_entry(bucket, k, size, etag, version)))
    except (bexc.ClientError, bexc.BotoCoreError) as e:
        code = e.response.get("Error", {}).get("Code", "") if isinstance(e, bexc.ClientError) else type(e).__name__
        raise ArtifactfsError(f"reference {uri}: {code}") from None
    if not out:
        raise ReferenceGone(f"reference {uri}: no such object or prefix")
    return out


def _s3_objects(client: Any, bucket: str, prefix: str, versioned: bool) -> Iterator[tuple[str, int, str, str | None]]:
    """(key, size, etag, version id) of the current objects below prefix."""
    if versioned:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", ()):
                if v["IsLatest"] and not v["Key"].endswith("/"):
                    yield v["Key"], v["Size"], v["ETag"], v["VersionId"]
        return
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", ()):
            if not o["Key"].endswith("/"):
                yield o["Key"], o["Size"], o["ETag"], None


# -- reading --------------------------------------------------------------------
class Source(Protocol):
    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the recorded object (shorter only at its end)."""


def unreadable(entry: FileEntry) -> str | None:
    """Why the bytes of reference entry `entry` cannot be read at all (it recorded
    only its URI, or a scheme we cannot read), or None if they can be tried."""
    uri = entry.ref or ""
    if entry.extra.get("size_unknown"):
        return f"reference {uri} records only its URI: its bytes cannot be read or checked"
    scheme = urlparse(uri).scheme
    if scheme not in ("file", "http", "https", "s3"):
        return f"reference {uri}: scheme {scheme!r} cannot be read"
    return None


def open_source(entry: FileEntry) -> Source:
    """A reader of the bytes a reference entry recorded; ReferenceUnreadable if it
    recorded only its URI (unreadable())."""
    uri = entry.ref or ""
    p = urlparse(uri)
    why = unreadable(entry)
    if why is not None:
        raise ReferenceUnreadable(why)
    if p.scheme == "file":
        return _FileSource(entry, unquote(p.path))
    if p.scheme in ("http", "https"):
        return _HttpSource(entry)
    return _S3Source(entry, p.netloc, p.path.lstrip("/"))


def _changed(uri: str) -> ReferenceChanged:
    return ReferenceChanged(f"reference {uri} changed since it was logged: refusing its new bytes")


def _gone(uri: str) -> ReferenceGone:
    return ReferenceGone(f"reference {uri} no longer exists")


class _FileSource:
    def __init__(self, entry: FileEntry, path: str):
        self.entry, self.path = entry, path

    def _check(self, fd: int) -> None:
        st = os.fstat(fd)
        if st.st_size != self.entry.size or st.st_mtime_ns != self.entry.extra.get("mtime_ns"):
            raise _changed(self.entry.ref or self.path)

    def read(self, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise _gone(self.entry.ref or self.path) from None
        try:
            self._check(fd)
            data = os.pread(fd, length, offset)
            self._check(fd)
            return data
        finally:
            os.close(fd)


class _HttpSource:
    def __init__(self, entry: FileEntry):
        self.entry = entry
        self.uri = entry.ref or ""
        self.etag = str(entry.extra.get("etag") or f'"{entry.digest}"')

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.entry.size)
        if offset >= end:
            return b""
        import requests  # see _resolve_http

        headers = {"Range": f"bytes={offset}-{end - 1}", "If-Match": self.etag}
        try:
            r = requests.get(self.uri, headers=headers, timeout=HTTP_TIMEOUT)
        except requests.RequestException as e:
            raise ArtifactfsError(f"reference {self.uri}: {type(e).__name__}") from None
        if r.status_code == 412:
            raise _changed(self.uri)
        if r.status_code in (404, 410):
            raise _gone(self.uri)
        if r.status_code not in (200, 206):
            raise ArtifactfsError(f"reference {self.uri}: HTTP {r.status_code}")
        if r.headers.get("ETag") not in (None, self.etag):  # a server that ignores If-Match
            raise _changed(self.uri)
        data = r.content
        if r.status_code == 200:  # the server ignored Range: the whole object came
            if len(data) != self.entry.size:
                raise _changed(self.uri)
            return data[offset:end]
        total = r.headers.get("Content-Range", "").rpartition("/")[2]
        if total != str(self.entry.size) or len(data) != end - offset:
            raise _changed(self.uri)
        return data


class _S3Source:
    def __init__(self, entry: FileEntry, bucket: str, key: str):
        self.entry, self.bucket, self.key = entry, bucket, key
        self.uri = entry.ref or ""

    def read(self, offset: int, length: int) -> bytes:
        import botocore.exceptions as bexc
        end = min(offset + length, self.entry.size)
        if offset >= end:
            return b""
        kw: dict[str, Any] = {"Range": f"bytes={offset}-{end - 1}",
                              "IfMatch": str(self.entry.extra.get("etag") or f'"{self.entry.digest}"')}
        if self.entry.extra.get("versionID"):
            kw["VersionId"] = self.entry.extra["versionID"]
        try:
            r = _s3_client().get_object(Bucket=self.bucket, Key=self.key, **kw)
            data = r["Body"].read()
        except bexc.ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412:
                raise _changed(self.uri) from None
            if status == 404:
                raise _gone(self.uri) from None
            raise ArtifactfsError(f"reference {self.uri}: {e.response.get('Error', {}).get('Code', status)}") from None
        except bexc.BotoCoreError as e:
            raise ArtifactfsError(f"reference {self.uri}: {type(e).__name__}") from None
        total = str(r.get("ContentRange", "")).rpartition("/")[2]
        if total not in ("", str(self.entry.size)) or len(data) != end - offset:
            raise _changed(self.uri)
        return data


def pieces(entry: FileEntry) -> Iterator[bytes]:
    """The whole recorded object in CHUNK_SIZE pieces; a file:// source's digest
    is checked once all of it has been read (ReferenceChanged)."""
    source = open_source(entry)
    whole = xxhash.xxh3_128()
    for offset in range(0, entry.size, CHUNK_SIZE):
        data = source.read(offset, CHUNK_SIZE)
        whole.update(data)
        yield data
    if isinstance(source, _FileSource) and b64_digest(whole.digest()) != entry.digest:
        raise _changed(entry.ref or "")


def exists(entry: FileEntry) -> bool:
    """Does the source still hold something to fetch?  (A changed source counts:
    reading it raises ReferenceChanged.)  Only ReferenceGone means no."""
    try:
        open_source(entry).read(0, 1)
    except ReferenceGone:
        return False
    except ReferenceChanged:
        pass
    return True

