"""S3 (and S3-compatible) object store: `s3://bucket/prefix`.

The endpoint comes from $ARTIFACTFS_S3_ENDPOINT (or $AWS_ENDPOINT_URL), credentials
only from boto3's usual chain (environment, ~/.aws files, instance roles): never from
the URL, and they never appear in a message.  Atomic operations use S3 conditional
writes: put_if_absent is PutObject with If-None-Match: *, compare_and_swap is PutObject
with If-Match: <etag>.  Every put is durable when it returns, so sync() has nothing to do."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..errors import ObjectNotFound, PreconditionFailed, StoreError
from .base import ObjectStore

try:
    import boto3
    import botocore.config
    import botocore.exceptions as bexc
except ImportError as e:  # boto3 is the optional 's3' extra
    raise StoreError("s3:// stores need boto3: pip install 'artifactfs[s3]'") from e

T = TypeVar("T")
POOL = 32  # parallel fetches (mount read-ahead, download_many) each hold a connection
BUSY_RETRIES = 20  # 409 ConditionalRequestConflict: another conditional write is in flight
_NETWORK_ERRORS = (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ReadTimeoutError,
                   bexc.ConnectionClosedError)


class _Lost(PreconditionFailed):
    """412 on a request that botocore had to resend: maybe it lost to its own first try."""

    def __init__(self, message: str, resent: bool):
        super().__init__(message)
        self.resent = resent


class _Busy(PreconditionFailed):
    """409: another conditional write on the key is in flight; its outcome is unknown."""


class _PastEnd(StoreError):
    """416: a range that starts at or after the end of the object."""


def endpoint_from_env() -> str | None:
    return os.environ.get("ARTIFACTFS_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def _public(endpoint: str | None) -> str:
    """The endpoint without any user:password@ part, for messages."""
    if not endpoint:
        return "AWS S3"
    p = urlparse(endpoint)
    return f"{p.scheme}://{p.hostname}" + (f":{p.port}" if p.port else "")


class S3Store(ObjectStore):
    def __init__(self, url: str):
        p = urlparse(url)
        if p.scheme != "s3" or not p.hostname:
            raise StoreError(f"store URL {url!r}: expected s3://bucket[/prefix]")
        if p.username or p.password or p.query or p.fragment:
            raise StoreError("s3:// store URLs take no credentials or query; use the AWS environment or ~/.aws")
        self.bucket = p.netloc
        self.prefix = p.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint = endpoint_from_env()
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=POOL, connect_timeout=5, read_timeout=60,
            s3={"addressing_style": "path"} if self.endpoint else None,
        )
        try:
            self.client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)
        except (bexc.BotoCoreError, ValueError) as e:
            raise StoreError(f"cannot use S3 endpoint {_public(self.endpoint)}: {type(e).__name__}") from None

    # -- helpers -------------------------------------------------------------
    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "\0" in key or ".." in key.split("/"):
            raise StoreError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run one S3 request, turning its failures into the store's errors."""
        try:
            return fn()
        except bexc.ClientError as e:
            err = e.response.get("Error", {})
            code, status = str(err.get("Code", "")), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StoreError(f"S3 bucket {self.bucket!r} does not exist at {_public(self.endpoint)}") from None
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise ObjectNotFound(f"object {key} not found in {self.url}") from None
            if code == "ConditionalRequestConflict" or status == 409:
                raise _Busy(f"{key} is being written concurrently") from None
            if code == "PreconditionFailed" or status == 412:
                resent = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
                raise _Lost(f"{key} changed concurrently", resent) from None
            if code == "InvalidRange" or status == 416:
                raise _PastEnd(f"range past the end of {key}") from None
            if status == 403:
                raise StoreError(f"access to {self.url} denied ({code}); check your AWS credentials") from None
            raise StoreError(f"S3 {what} {self.url}/{key} failed: {code} {err.get('Message', '')}".rstrip()) from None
        except bexc.NoCredentialsError:
            raise StoreError("no S3 credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                             "or configure ~/.aws/credentials") from None
        except _NETWORK_ERRORS as e:
            raise StoreError(f"cannot reach S3 endpoint {_public(self.endpoint)} ({type(e).__name__})") from None
        except bexc.BotoCoreError as e:
            raise StoreError(f"S3 {what} {self.url}/{key} failed: {type(e).__name__}") from None

    def _get(self, key: str, **kw: Any) -> dict:
        return self._call("get", key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kw))

    def _put(self, key: str, data: bytes, **kw: Any) -> str:
        r = self._call("put", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **kw))
        return r["ETag"]

    def _head(self, key: str) -> dict:
        return self._call("head", key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)))

    # -- reads ---------------------------------------------------------------
    def get(self, key: str) -> bytes:
        return self._get(key)["Body"].read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return self._get(key, Range=f"bytes={start}-{start + length - 1}")["Body"].read()
        except _PastEnd:  # like pread at or past the end
            return b""

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        r = self._get(key)
        return r["Body"].read(), r["ETag"]

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
            return True
        except ObjectNotFound:
            return False

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    page_size = 1000  # S3's own maximum; tests use small pages

    def list(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base + prefix}
        if not recursive:
            kw["Delimiter"] = "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(**kw, PaginationConfig={"PageSize": self.page_size})
        it = iter(pages)
        while True:
            page = self._call("list", prefix, lambda: next(it, None))
            if page is None:
                return
            keys = [o["Key"] for o in page.get("Contents", ())] + [c["Prefix"] for c in page.get("CommonPrefixes", ())]
            for k in sorted(keys):
                yield k[len(base):]

    # -- writes --------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        for attempt in range(BUSY_RETRIES):
            try:
                self._put(key, data, IfNoneMatch="*")
                return True
            except _Busy:
                time.sleep(min(0.01 * 2 ** attempt, 0.5))  # the other write may yet fail: ask again
            except _Lost as e:
                # A put whose response was lost is resent by botocore and then fails against
                # its own first try; callers make `data` unique (version records hold an id).
                return e.resent and self.exists(key) and self.get(key) == data
        raise StoreError(f"could not create {self.url}/{key}: conditional writes kept conflicting")

    def compare_and_swap(self, key: str, data: bytes, etag: str | None) -> str:
        """A resent request that fails against its own first try also raises
        PreconditionFailed: the caller's retry re-reads and reapplies its change."""
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            return self._put(key, data, **cond)
        except ObjectNotFound:  # If-Match on a deleted key answers 404
            raise PreconditionFailed(f"{key} changed concurrently") from None

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def sync(self) -> None:
        """Nothing to do: S3 acknowledges a put only once it is durable."""
