"""The client side of a mount's control socket (mount/control.py has the
server): `artifactfs sync` asks the daemon to commit drafts, without importing
trio (~0.1 s of every call).  The protocol is in docs/drafts.md."""
from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable

from ..errors import ArtifactfsError


def sockaddr(address: str) -> str | bytes:
    """A socket path, or '@name' for a Linux abstract socket."""
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def request(address: str, payload: dict, progress: Callable[[str], None] = lambda text: None) -> dict:
    """Blocking client: send one request, wait (as long as commits take) for the reply;
    lines {"progress": text} the daemon sends before it go to `progress`.
    ArtifactfsError if the daemon cannot be reached, or if the socket's owner is
    neither this user nor root (anyone may bind an abstract name: nothing is sent
    to, or believed from, a process of another user)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(sockaddr(address))
        except OSError as e:
            raise ArtifactfsError(f"cannot reach the mount daemon at {address}: {e.strerror}") from None
        uid = peer_uid(s)
        if uid not in (os.getuid(), 0):
            raise ArtifactfsError(f"the control socket {address} is held by uid {uid}, not by this user or root: "
                                  "not the mount daemon; nothing was sent")
        s.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while True:
            line, sep, rest = data.partition(b"\n")
            if sep:
                reply = json.loads(line)
                if "progress" not in reply:
                    return reply
                progress(str(reply["progress"]))
                data = rest
                continue
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    raise ArtifactfsError("the mount daemon closed the connection without answering (see its log)")
