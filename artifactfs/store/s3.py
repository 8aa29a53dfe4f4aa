"""S3 (and S3-compatible) object store: `s3://bucket/prefix`.

The endpoint, addressing style, timeouts and retries come from S3Options
(s3config.py); credentials only from boto3's usual chain (environment, profile,
~/.aws files, instance roles): never from the URL, and they never appear in a
message.  Atomic operations use S3 conditional writes: put_if_absent is PutObject
with If-None-Match: *, compare_and_swap is PutObject with If-Match: <etag>.
Before its first write the store checks once that the service honours both
(some S3-compatible services ignore them, which would let two writers publish
the same version), and refuses to write otherwise.

put() uploads in the background through a bounded pool (the interface allows it
to buffer); sync() waits for every upload and raises the first failure, so a
commit never names an object that did not arrive.  Reads of a key being put
wait for that upload (read-your-writes)."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..errors import ObjectNotFound, PreconditionFailed, StoreError

try:
    import boto3
    import botocore.exceptions as bexc
except ImportError as e:  # boto3 is the optional 's3' extra
    raise StoreError("s3:// stores need boto3: pip install 'artifactfs[s3]'") from e

from .base import ObjectStat, ObjectStore
from .s3config import NETWORK_ERRORS, S3Options, public_endpoint, translate

T = TypeVar("T")
log = logging.getLogger("artifactfs.store")
BUSY_RETRIES = 20  # 409 ConditionalRequestConflict: another conditional write is in flight
UPLOADS = 16       # background put() workers
UPLOAD_BYTES = 128 * 1024 * 1024  # bytes of put() data held while uploading; put() waits above it
PROBE = ".artifactfs-probe-"
FETCHERS = 8      # background GETs started by prefetch()
AHEAD_KEPT = 32   # prefetched objects held (8 MiB blobs: 256 MiB at most)
SMALL_PUT = 1024 * 1024  # put_new() of at most this many bytes does not ask whether the key exists


class _Lost(PreconditionFailed):
    """412 on a request that botocore had to resend: maybe it lost to its own first try."""

    def __init__(self, message: str, resent: bool):
        super().__init__(message)
        self.resent = resent


class _Busy(PreconditionFailed):
    """409: another conditional write on the key is in flight; its outcome is unknown."""


class _BodyBroken(Exception):
    """A response body that broke off while being read (botocore does not retry these)."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


class _PastEnd(StoreError):
    """416: a range that starts at or after the end of the object."""


class _Uploads:
    """Background put()s: at most UPLOADS at once and UPLOAD_BYTES held; failures
    are kept for sync(), by key (a failed upload that a later commit puts again,
    as a retried sync does, no longer counts)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(UPLOADS, thread_name_prefix="s3-put")
        self._cond = threading.Condition()
        self._pending: dict[str, Future] = {}
        self._bytes = 0
        self._errors: dict[str, BaseException] = {}  # by key: a later good put of the key clears it

    def submit(self, key: str, data: bytes, upload: Callable[[], Any]) -> None:
        with self._cond:
            # puts of one key land in the order they were made: wait for an earlier one
            while key in self._pending or (self._bytes and self._bytes + len(data) > UPLOAD_BYTES):
                self._cond.wait()
            self._bytes += len(data)
            future = self._pool.submit(upload)
            self._pending[key] = future
        future.add_done_callback(lambda f: self._done(key, f, len(data)))

    def _done(self, key: str, future: Future, size: int) -> None:
        with self._cond:
            self._bytes -= size
            if self._pending.get(key) is future:
                del self._pending[key]
            error = future.exception()
            if error is not None:
                self._errors[key] = error
            else:
                self._errors.pop(key, None)
            self._cond.notify_all()

    def wait(self, key: str | None = None) -> None:
        """Until the put of `key` (None: every put) has finished, well or not."""
        with self._cond:
            while (key in self._pending) if key is not None else self._pending:
                self._cond.wait()

    def raise_failures(self) -> None:
        with self._cond:
            errors, self._errors = self._errors, {}
        if errors:
            raise next(iter(errors.values()))


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def _client(options: S3Options, attempts: int) -> Any:
    """A boto3 client, shared by the stores of this process that use the same
    options and AWS environment (a new boto3 session costs ~0.2 s; clients are
    thread-safe).  The AWS_* variables are part of the key because the credential
    chain reads them."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (options, attempts, env)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                client = boto3.session.Session().client("s3", endpoint_url=options.endpoint,
                                                        config=options.botocore_config(attempts))
            except (bexc.BotoCoreError, ValueError) as e:
                why = "not an http:// or https:// URL" if isinstance(e, ValueError) else type(e).__name__
                raise StoreError(f"cannot use S3 endpoint {public_endpoint(options.endpoint)}: {why}") from None
            _clients[key] = client
        return client


os.register_at_fork(after_in_child=_clients.clear)  # a child must not share the parent's connections


class S3Store(ObjectStore):
    pack_below = 64 * 1024  # one request per file costs more than the file below this (store-format.md 5.6)

    def __init__(self, url: str, options: S3Options | None = None):
        p = urlparse(url)
        if p.scheme != "s3" or not p.hostname:
            raise StoreError(f"store URL {url!r}: expected s3://bucket[/prefix]")
        if p.username or p.password or p.query or p.fragment:
            raise StoreError("s3:// store URLs take no credentials or query; use the AWS environment or ~/.aws")
        self.bucket = p.netloc
        self.prefix = p.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.options = options or S3Options.from_env()
        self.endpoint = self.options.endpoint
        self.client = _client(self.options, self.options.attempts)
        self._uploads = _Uploads()
        self._probed = False
        self._ahead: OrderedDict[str, Future] = OrderedDict()  # prefetch(): key -> its GET
        self._ahead_lock = threading.Lock()
        self._fetcher: ThreadPoolExecutor | None = None
        self._probe_error: StoreError | None = None
        self._down_until = 0.0  # monotonic time until which the endpoint counts as down
        self._quick: Any = None
        self._probe_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------
    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "\0" in key or ".." in key.split("/"):
            raise StoreError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[Any], T]) -> T:
        """Run one S3 request `fn(client)` (botocore retries it), turning its failures
        into the store's errors.  A response body that breaks off while `fn` reads it
        (_BodyBroken) is asked for again while the request's time budget lasts.

        After a request has failed for want of an answer, the endpoint counts as down
        for `timeout` seconds: requests meanwhile get one attempt, not retries, so an
        operation made of several requests fails in about one timeout, not several;
        the first success ends it."""
        started = time.monotonic()
        deadline = started + self.options.timeout - self.options.attempt_timeout
        if log.isEnabledFor(logging.DEBUG):
            try:
                return self._attempts(what, key, fn, deadline)
            finally:
                log.debug("S3 %s %s: %.1f ms", what, key, (time.monotonic() - started) * 1000)
        return self._attempts(what, key, fn, deadline)

    def _attempts(self, what: str, key: str, fn: Callable[[Any], T], deadline: float) -> T:
        while True:
            client = self._quick_client() if time.monotonic() < self._down_until else self.client
            try:
                result = fn(client)
                self._down_until = 0.0
                return result
            except _BodyBroken as e:
                if time.monotonic() >= deadline:
                    raise self._unreachable(e.cause, what, key) from None
                log.warning("S3 %s of %s: %s while reading; asking again", what, key, type(e.cause).__name__)
            except bexc.ClientError as e:
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if status >= 500:
                    self._down_until = time.monotonic() + self.options.timeout
                raise self._client_error(e, what, key) from None
            except NETWORK_ERRORS as e:
                raise self._unreachable(e, what, key) from None
            except bexc.BotoCoreError as e:
                raise translate(e, what, self.bucket, self.url, key, self.endpoint) from None

    def _unreachable(self, e: Exception, what: str, key: str) -> Exception:
        self._down_until = time.monotonic() + self.options.timeout
        return translate(e, what, self.bucket, self.url, key, self.endpoint)

    def _quick_client(self) -> Any:
        """A client that tries once (used while the endpoint is down)."""
        if self._quick is None:
            self._quick = _client(self.options, 1)
        return self._quick

    def _client_error(self, e: bexc.ClientError, what: str, key: str) -> Exception:
        code = str(e.response.get("Error", {}).get("Code", ""))
        meta = e.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(f"object {key} not found in {self.url}")
        if code == "ConditionalRequestConflict" or status == 409:
            return _Busy(f"{key} is being written concurrently")
        if code == "PreconditionFailed" or status == 412:
            return _Lost(f"{key} changed concurrently", meta.get("RetryAttempts", 0) > 0)
        if code == "InvalidRange" or status == 416:
            return _PastEnd(f"range past the end of {key}")
        return translate(e, what, self.bucket, self.url, key, self.endpoint)

    def _get(self, key: str, **kw: Any) -> tuple[bytes, dict]:
        """Body and response of a GetObject, the body read inside the retry budget."""
        self._uploads.wait(key)

        def fetch(client: Any) -> tuple[bytes, dict]:
            r = client.get_object(Bucket=self.bucket, Key=self._key(key), **kw)
            try:
                return r["Body"].read(), r
            except NETWORK_ERRORS as e:
                raise _BodyBroken(e) from None
        return self._call("get", key, fetch)

    def _put(self, key: str, data: bytes, **kw: Any) -> str:
        r = self._call("put", key, lambda c: c.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **kw))
        return r["ETag"]

    def _head(self, key: str) -> dict:
        self._uploads.wait(key)
        return self._call("head", key, lambda c: c.head_object(Bucket=self.bucket, Key=self._key(key)))

    # -- the conditional-write check -------------------------------------------
    def _writable(self) -> None:
        """Once per store object, before its first write: refuse a service that
        ignores If-None-Match or If-Match on PutObject (StoreError)."""
        if self._probed:
            return
        with self._probe_lock:
            if self._probed:
                return
            if self._probe_error is not None and time.monotonic() < self._down_until:
                raise self._probe_error  # the endpoint is still down: do not wait again
            try:
                self._probe()
            except StoreError as e:
                self._probe_error = e
                raise
            self._probed = True

    def _probe(self) -> None:
        key = PROBE + uuid.uuid4().hex
        where = f"S3 endpoint {public_endpoint(self.endpoint)} (bucket {self.bucket!r})"
        refusal = f"{where} does not honour conditional writes (%s); artifactfs needs them " \
                  "to publish versions safely and will not write there"
        self._put(key, b"probe", IfNoneMatch="*")
        try:
            for header, cond in (("If-None-Match: *", {"IfNoneMatch": "*"}),
                                 ("If-Match", {"IfMatch": '"0123456789abcdef0123456789abcdef"'})):
                try:
                    self._put(key, b"probe again", **cond)
                except PreconditionFailed:
                    continue
                except StoreError as e:
                    if "NotImplemented" in str(e):
                        raise StoreError(refusal % (header + " not implemented")) from None
                    raise
                raise StoreError(refusal % (header + " was ignored"))
        finally:
            try:
                self._call("delete", key, lambda c: c.delete_object(Bucket=self.bucket, Key=self._key(key)))
            except StoreError:
                log.warning("could not remove the probe object %s from %s", key, self.url)

    # -- reads ---------------------------------------------------------------
    def get(self, key: str) -> bytes:
        with self._ahead_lock:
            fetched = self._ahead.pop(key, None)
        if fetched is not None:
            try:
                return fetched.result()[0]
            except Exception:  # noqa: BLE001 - asked again below, which raises its own error
                pass
        return self._get(key)[0]

    def prefetch(self, keys: list[str]) -> None:
        """Start GETs of `keys` in the background (at most FETCHERS at once); get()
        takes their results.  At most AHEAD_KEPT are kept: older ones are dropped."""
        with self._ahead_lock:
            if self._fetcher is None:
                self._fetcher = ThreadPoolExecutor(FETCHERS, thread_name_prefix="s3-get")
            for key in keys:
                if key not in self._ahead:
                    self._ahead[key] = self._fetcher.submit(self._get, key)
            while len(self._ahead) > AHEAD_KEPT:
                self._ahead.popitem(last=False)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return self._get(key, Range=f"bytes={start}-{start + length - 1}")[0]
        except _PastEnd:  # like pread at or past the end
            return b""

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data, r = self._get(key)
        return data, r["ETag"]

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
            return True
        except ObjectNotFound:
            return False

    def present(self, keys: Iterable[str]) -> set[str]:
        """HEADs of many keys, UPLOADS at a time (a second put of 10,000 unchanged
        files asks about each of their blobs)."""
        keys = list(keys)
        if len(keys) < 4:
            return {k for k in keys if self.exists(k)}
        with ThreadPoolExecutor(UPLOADS, thread_name_prefix="s3-head") as pool:
            return {k for k, there in zip(keys, pool.map(self.exists, keys)) if there}

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    page_size = 1000  # S3's own maximum; tests use small pages

    def _pages(self, prefix: str, recursive: bool) -> Iterator[dict]:
        """The list_objects_v2 pages below `prefix` (after pending uploads)."""
        self._uploads.wait()
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._base + prefix}
        if not recursive:
            kw["Delimiter"] = "/"
        while True:
            page = self._call("list", prefix, lambda c: c.list_objects_v2(**kw, MaxKeys=self.page_size))
            yield page
            if not page.get("IsTruncated"):
                return
            kw["ContinuationToken"] = page["NextContinuationToken"]

    @property
    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def list(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        for page in self._pages(prefix, recursive):
            keys = [o["Key"] for o in page.get("Contents", ())] + [c["Prefix"] for c in page.get("CommonPrefixes", ())]
            for k in sorted(keys):
                yield k[len(self._base):]

    def list_stat(self, prefix: str) -> Iterator[ObjectStat]:
        for page in self._pages(prefix, True):
            for o in page.get("Contents", ()):
                yield ObjectStat(o["Key"][len(self._base):], int(o["Size"]), o["LastModified"].timestamp())

    # -- writes --------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Start uploading `data` (which the caller must not change); durable after sync()."""
        self._writable()
        self._key(key)  # a bad key is refused here, not in the background
        self._uploads.submit(key, data, lambda: self._put(key, data))

    def put_new(self, key: str, data: bytes) -> bool:
        """In the background, like put(): a small object is put without asking
        first (a HEAD would cost the same one request); a larger one only after a
        HEAD, made by the upload worker, finds it missing (the caller does not wait
        for the HEAD).  True: it may be written."""
        self._writable()
        self._key(key)
        self._uploads.submit(key, data, lambda: self._put_unless_there(key, data))
        return True

    def _put_unless_there(self, key: str, data: bytes) -> None:
        if len(data) > SMALL_PUT:
            try:
                self._call("head", key, lambda c: c.head_object(Bucket=self.bucket, Key=self._key(key)))
                return  # there already (maybe an upload that timed out arrived after all)
            except ObjectNotFound:
                pass
        self._put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._writable()
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
        self._writable()
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            return self._put(key, data, **cond)
        except ObjectNotFound:  # If-Match on a deleted key answers 404
            raise PreconditionFailed(f"{key} changed concurrently") from None

    def delete(self, key: str) -> None:
        self._writable()
        self._uploads.wait(key)
        self._call("delete", key, lambda c: c.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def sync(self) -> None:
        """Wait for every background put(); raise the first that failed (S3
        acknowledges a put only once it is durable)."""
        self._uploads.wait()
        self._uploads.raise_failures()
