"""Health checks and waits used while the cluster starts."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class StartupError(RuntimeError):
    """The cluster did not come up; the message says which part and why."""


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
