"""How the S3 store talks to its service: endpoint, addressing, timeouts and
retries (S3Options), and how a failed request becomes one clear StoreError.

Every request is bounded: botocore's "standard" retry mode retries 5xx,
throttling, timeouts and dropped connections with exponential backoff and full
jitter (delay = random() * 2**(attempt-1) s), at most `attempts` times, and each
attempt has connect and read timeouts chosen so that the whole request, its
retries and their backoff included, ends within `timeout` seconds.  A read of a
response body that stalls is retried inside the same budget (S3Store)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import botocore.config
import botocore.exceptions as bexc

from ..errors import StoreError

DEFAULT_TIMEOUT = 30.0   # seconds for one request, retries included ($ARTIFACTFS_S3_TIMEOUT)
DEFAULT_ATTEMPTS = 3     # tries per request ($ARTIFACTFS_S3_ATTEMPTS)
POOL = 32                # connections: parallel fetches and uploads each hold one
NETWORK_ERRORS = (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ReadTimeoutError,
                  bexc.ConnectionClosedError, bexc.ResponseStreamingError)
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}


def endpoint_from_env() -> str | None:
    return os.environ.get("ARTIFACTFS_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def public_endpoint(endpoint: str | None) -> str:
    """The endpoint without any user:password@ part, for messages."""
    if not endpoint:
        return "AWS S3"
    p = urlparse(endpoint)
    if not (p.scheme and p.hostname):  # not a URL: the text as given, less anything before an '@'
        return repr(endpoint.rpartition("@")[2])
    return f"{p.scheme}://{p.hostname}" + (f":{p.port}" if p.port else "")


def _env_number(name: str, default: float, low: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise StoreError(f"${name}={text!r} is not a number") from None
    if value < low:
        raise StoreError(f"${name} must be at least {low:g}")
    return value


@dataclass(frozen=True)
class S3Options:
    """endpoint: None for AWS itself; addressing: 'path', 'virtual' or 'auto'
    (path-style by default whenever an endpoint is given: MinIO, Ceph RGW, moto);
    timeout: seconds one request may take, retries included; attempts: tries."""

    endpoint: str | None
    addressing: str
    timeout: float
    attempts: int

    @classmethod
    def from_env(cls) -> "S3Options":
        """$ARTIFACTFS_S3_ENDPOINT or $AWS_ENDPOINT_URL (the CLI's --endpoint-url sets
        the latter), $ARTIFACTFS_S3_ADDRESSING, $ARTIFACTFS_S3_TIMEOUT, $ARTIFACTFS_S3_ATTEMPTS."""
        endpoint = endpoint_from_env()
        addressing = os.environ.get("ARTIFACTFS_S3_ADDRESSING") or ("path" if endpoint else "auto")
        if addressing not in ("path", "virtual", "auto"):
            raise StoreError(f"$ARTIFACTFS_S3_ADDRESSING={addressing!r}: use path, virtual or auto")
        return cls(endpoint, addressing, _env_number("ARTIFACTFS_S3_TIMEOUT", DEFAULT_TIMEOUT, 1.0),
                   int(_env_number("ARTIFACTFS_S3_ATTEMPTS", DEFAULT_ATTEMPTS, 1)))

    @property
    def attempt_timeout(self) -> float:
        """Seconds one attempt may take: the budget left after the worst-case
        backoff (1 + 2 + ... s), shared by the attempts."""
        backoff = sum(min(20.0, 2.0 ** i) for i in range(self.attempts - 1))
        return max(0.5, (self.timeout - backoff) / self.attempts)

    def botocore_config(self, attempts: int | None = None) -> botocore.config.Config:
        per = self.attempt_timeout
        connect = min(5.0, per / 3)
        return botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": attempts or self.attempts},
            max_pool_connections=POOL, connect_timeout=connect, read_timeout=per - connect,
            s3={"addressing_style": self.addressing},
            tcp_keepalive=True,
        )


def translate(e: Exception, what: str, bucket: str, url: str, key: str, endpoint: str | None) -> Exception:
    """The store's error for a failed request: one line naming the bucket (and the
    endpoint), never a credential."""
    where = public_endpoint(endpoint)
    if isinstance(e, bexc.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StoreError(f"S3 bucket {bucket!r} does not exist at {where}")
        if code in CREDENTIAL_CODES:
            return StoreError(f"{where} rejected the AWS credentials for bucket {bucket!r} ({code}); "
                              "check AWS_ACCESS_KEY_ID / AWS_PROFILE")
        if status == 403:
            return StoreError(f"access to S3 bucket {bucket!r} at {where} denied ({code or 'Forbidden'}); "
                              "check your AWS credentials and the bucket policy")
        if status is not None and status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
            return StoreError(f"S3 {what} of {url}/{key} failed at {where} after retries: {code} (HTTP {status})")
        return StoreError(f"S3 {what} of {url}/{key} failed: {code} {err.get('Message', '')}".rstrip())
    if isinstance(e, bexc.NoCredentialsError):
        return StoreError(f"no AWS credentials found for S3 bucket {bucket!r}: set AWS_ACCESS_KEY_ID/"
                          "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or configure ~/.aws/credentials")
    if isinstance(e, NETWORK_ERRORS) or isinstance(e, OSError):
        return StoreError(f"cannot reach S3 endpoint {where} for bucket {bucket!r} ({type(e).__name__} "
                          f"on {what} of {key}, after retries)")
    return StoreError(f"S3 {what} of {url}/{key} failed: {type(e).__name__}")
