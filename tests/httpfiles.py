"""A real HTTP server on 127.0.0.1 serving in-memory files with strong ETags,
byte ranges (206) and If-Match (412 when the ETag differs), for reference tests.

    with HttpFiles({"/a.bin": b"..."}) as srv:
        srv.url("/a.bin"); srv.files["/a.bin"] = b"changed"; srv.ranges  # Range headers seen"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def etag_of(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


class HttpFiles:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.ranges: list[str] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                data = srv.files.get(self.path)
                if data is None:
                    return self._send(404, b"not found\n", {}, body)
                etag = etag_of(data)
                wanted = self.headers.get("If-Match")
                if wanted is not None and wanted not in ("*", etag):
                    return self._send(412, b"", {"ETag": etag}, body)
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    srv.ranges.append(rng)
                    first, _, last = rng[len("bytes="):].partition("-")
                    start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                    if start >= len(data):
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
                    return self._send(206, data[start:end + 1],
                                      {"ETag": etag, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, body)
                self._send(200, data, {"ETag": etag, "Accept-Ranges": "bytes"}, body)

            def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> "HttpFiles":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
