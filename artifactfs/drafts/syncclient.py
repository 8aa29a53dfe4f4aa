"""The client side of a mount's control socket (mount/control.py has the
server): `artifactfs sync` asks the daemon to commit drafts, without importing
trio (~0.1 s of every call).  The protocol is in docs/drafts.md."""
from __future__ import annotations

import json
import socket

from ..errors import ArtifactfsError


def sockaddr(address: str) -> str | bytes:
    """A socket path, or '@name' for a Linux abstract socket."""
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def request(address: str, payload: dict) -> dict:
    """Blocking client: send one request, wait (as long as commits take) for the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(sockaddr(address))
        except OSError as e:
            raise ArtifactfsError(f"cannot reach the mount daemon at {address}: {e.strerror}") from None
        s.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ArtifactfsError("the mount daemon closed the connection without answering (see its log)")
    return json.loads(data)
