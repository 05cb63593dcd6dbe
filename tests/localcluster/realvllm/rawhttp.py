"""HTTP/1.1 over a plain socket, keeping every byte and when it arrived.

The fixture recorder and the fidelity test need what a client really
sees: the status line and headers as sent, the chunked framing, whether
a stream ended with its terminating chunk or was cut, and when each piece
came. http.client and aiohttp hide exactly that.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawResponse:
    """One response as received; `ending` says how the connection ended."""

    head: bytes = b""
    body: bytes = b""
    # "complete": the body was whole (terminal chunk or content-length);
    # "cut": the connection closed before that; "reset": ECONNRESET;
    # "refused": nothing listened; "timeout": the deadline passed.
    ending: str = "complete"
    # (seconds since the request was sent, bytes) per socket read.
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    sent_at: float = 0.0
    ended_at: float = 0.0

    @property
    def status(self) -> int:
        if not self.head:
            return 0
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def as_text(self) -> str:
        """Status line, headers and body as a file shows them (LF line ends)."""
        head = self.head.decode("latin-1").replace("\r\n", "\n")
        return f"{head}\n\n{self.body.decode(errors='replace')}"


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    timeout_s: float = 60.0,
) -> RawResponse:
    """Send one request (JSON `body`, or `raw` bytes) and read until the connection ends."""
    data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    message = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
    out = RawResponse()
    deadline = time.monotonic() + timeout_s
    received = b""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        out.ending = "refused"
        return out
    with sock:
        sock.sendall(message)
        out.sent_at = time.monotonic()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.ending = "timeout"
                break
            sock.settimeout(remaining)
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                out.ending = "reset"
                break
            except TimeoutError:
                out.ending = "timeout"
                break
            if not piece:
                break
            out.arrivals.append((time.monotonic() - out.sent_at, piece))
            received += piece
    out.ended_at = time.monotonic()
    head, _, rest = received.partition(b"\r\n\r\n")
    out.head = head
    if out.header("transfer-encoding") == "chunked":
        out.body, whole = _dechunk(rest)
    else:
        length = out.header("content-length")
        out.body = rest
        whole = length is None or len(rest) >= int(length)
    if out.ending == "complete" and not whole:
        out.ending = "cut"
    return out


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """(body, whether the terminating zero-length chunk arrived)."""
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return body, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, True
        if len(data) < size:
            return body + data, False
        body += data[:size]
        data = data[size + 2 :]
