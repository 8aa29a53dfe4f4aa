"""A small HTTP proxy on 127.0.0.1 in front of the moto server, to make an
S3-compatible service misbehave in ways moto does not: ignore conditional-write
headers, deny access, reject credentials, or answer 503 for a while.

    with S3Proxy(server.endpoint) as proxy:
        proxy.mode = "strip-conditional"
        monkeypatch.setenv("ARTIFACTFS_S3_ENDPOINT", proxy.endpoint)

Modes: "pass" (forward as is), "strip-conditional" (drop If-None-Match and
If-Match before forwarding, as a service that does not implement them would),
"deny" (403 AccessDenied), "read-only" (403 AccessDenied for
PUT, POST and DELETE: credentials with GetObject and ListBucket only), "bad-credentials" (403 InvalidAccessKeyId), "hang"
(take requests and never answer, as a stalled service).  `hang_on` = (method,
text): switch to "hang" when a request with that method and path arrives (that
request is not forwarded either).
`fail_next` = n answers the next n requests with 503 SlowDown (then forwards).
`requests` counts what reached the proxy, by method.  stop() and start() take the
proxy off the network and back on the same port (a stopped and restarted service
that keeps its data)."""
from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from s3server import MotoServer

_ERROR = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
          "<Message>{message}</Message></Error>")
_DROP = {"if-none-match", "if-match"}
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class S3Proxy:
    def __init__(self, upstream: str):
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.mode = "pass"
        self.fail_next = 0
        self.hang_on: tuple[str, str] | None = None
        self._stopped = False
        self._released = threading.Event()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests[self.command] += 1
                    failing = proxy.fail_next > 0
                    if failing:
                        proxy.fail_next -= 1
                    if proxy.hang_on and proxy.hang_on[0] == self.command and proxy.hang_on[1] in self.path:
                        proxy.mode, proxy.hang_on = "hang", None
                    mode = proxy.mode
                if proxy._stopped:  # a connection kept alive from before stop(): drop it
                    self.close_connection = True
                    return
                if failing:
                    return self._error(503, "SlowDown", "Please reduce your request rate.")
                if mode == "hang":
                    proxy._released.wait()
                    self.close_connection = True
                    return
                if mode == "deny" or (mode == "read-only" and self.command not in ("GET", "HEAD")):
                    return self._error(403, "AccessDenied", "Access Denied")
                if mode == "bad-credentials":
                    return self._error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided "
                                       "does not exist in our records.")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if mode == "strip-conditional":
                    headers = {k: v for k, v in headers.items() if k.lower() not in _DROP}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    self.send_response(r.status, r.reason)
                    for k, v in r.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            def _error(self, status: int, code: str, message: str) -> None:
                data = _ERROR.format(code=code, message=message).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._handler = Handler
        self._server = self._serve(0)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _serve(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), self._handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self) -> None:
        """Stop listening, as a stopped service: connections are refused."""
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()

    def start(self) -> None:
        """Listen again on the same port."""
        self._server = self._serve(self._server.server_address[1])
        self._stopped = False

    def __enter__(self) -> "S3Proxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self.stop()


SECRET = "S3CR3T-never-shown"  # the secret key the proxy fixture's environment carries


@pytest.fixture
def proxy(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Proxy]:
    """A proxy in front of the session's moto server, which the environment points at
    (with SECRET as the secret key, so a test can check it is never shown).  A test
    module that uses it imports it with s3server's fixtures."""
    with S3Proxy(s3_server.endpoint) as p:
        for k, v in s3_server.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("ARTIFACTFS_S3_ENDPOINT", p.endpoint)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        yield p
