"""Small HTTPS helpers to talk to the control plane while it starts.

The full clients (kubernetes_asyncio) are for tests and the runtime; the
start-up path only needs a few GETs and POSTs with the admin certificate.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubeinfer.localcluster.certs import ClusterPki


class StartupError(RuntimeError):
    """The cluster did not come up; the message says which part and why."""


class AdminApi:
    """GET/POST against the apiserver as the admin (client certificate)."""

    def __init__(self, server: str, pki: ClusterPki) -> None:
        self._server = server
        self._context = ssl.create_default_context(cafile=str(pki.ca.cert))
        self._context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 5,
        content_type: str = "application/json",
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._server + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, context=self._context, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")


def http_ok(url: str, *, verify: ssl.SSLContext | None = None, timeout: float = 2) -> bool:
    """True when url answers 200 (self-signed TLS accepted unless verify is given)."""
    context = verify
    if context is None and url.startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # loopback component with a self-signed cert
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def wait_until(
    what: str,
    condition: Callable[[], bool],
    timeout: float,
    check_alive: Callable[[], None] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll condition until it holds; StartupError after timeout.

    check_alive runs between polls and raises when a component died, so a
    crash is reported at once instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check_alive:
            check_alive()
        if condition():
            return
        if time.monotonic() >= deadline:
            raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"
