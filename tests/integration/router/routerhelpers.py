"""Helpers for the router's integration tests (imported by tests and conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.waiting import async_wait_for
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router.app import Router

HOST = "127.0.0.1"


def make_table(
    urls: list[str], *, revisions: list[str] | None = None, **extra: Any
) -> RoutingTable:
    backends = [
        {"name": f"b{i}", "url": url, "revision": (revisions or ["r1"] * len(urls))[i]}
        for i, url in enumerate(urls)
    ]
    for i, b in enumerate(extra.pop("backend_extra", [{}] * len(urls))):
        backends[i].update(b)
    doc = {
        "service": "svc",
        "model": "tiny",
        "strategy": "round-robin",
        "backends": backends,
        "healthCheck": {"intervalSeconds": 0.2, "timeoutSeconds": 0.3},
    }
    doc.update(extra)
    return RoutingTable.model_validate(doc)


def start_router_process(
    directory: Path, table: RoutingTable, *args: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`kubeinfer-router` as users run it: a process on HOST with ``--config``
    (the table written to ``directory``), its output in ``directory/router.log``.
    Returns the process, its port and the log; the caller waits for /readyz
    and ends it."""
    routes = directory / "routes.json"
    routes.write_text(json.dumps(table.to_dict()))
    port = free_port()
    log = directory / "router.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "kubeinfer.router.main",
            "--config",
            str(routes),
            "--host",
            HOST,
            "--port",
            str(port),
            "--access-log",
            "off",
            *args,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, port, log


class MockProcess:
    """A mock backend in its own process: the thing tests kill -9."""

    def __init__(self, port: int, args: list[str]) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "kubeinfer.localcluster.mockbackend",
                "--port",
                str(port),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            async with session.get(self.url + "/health") as r:
                return r.status == 200

        await async_wait_for(up, 10.0, interval=0.05, what=f"mock backend on {self.port}")

    async def set(self, session: aiohttp.ClientSession, **changes: Any) -> None:
        async with session.post(self.url + "/_mock/mode", json=changes) as r:
            assert r.status == 200, await r.text()

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(self.url + "/_mock/stats") as r:
            data: dict[str, Any] = await r.json()
            return data

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class RouterUnderTest:
    router: Router
    url: str
    access_log: Path

    @property
    def pool(self) -> Any:
        return self.router.pool

    def debug(self) -> dict[str, Any]:
        from kubeinfer.router.stats import render_debug

        return render_debug(self.router.snapshot()).model_dump(mode="json", by_alias=True)

    def access_lines(self) -> list[dict[str, Any]]:
        self.router.access.flush()
        text = self.access_log.read_text() if self.access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]


@dataclass
class LoadResult:
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return self.errors + [str(s) for s in self.statuses if s != 200]


async def run_load(
    session: aiohttp.ClientSession,
    url: str,
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    body: dict[str, Any] | None = None,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """Closed-loop load, bounded in count and in time; every request is counted."""
    result = LoadResult()
    payload = body or {"model": "tiny", "prompt": "hello", "max_tokens": 8}
    deadline = time.monotonic() + max_seconds
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < max_requests and time.monotonic() < deadline and not (stop and stop.is_set()):
            sent += 1
            try:
                async with session.post(url + "/v1/completions", json=payload) as r:
                    await r.read()
                    result.statuses.append(r.status)
                    result.backends.append(r.headers.get("x-kubeinfer-backend", ""))
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors.append(repr(exc))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


@contextlib.contextmanager
def no_kubernetes_service_host() -> Iterator[None]:
    saved = os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["KUBERNETES_SERVICE_HOST"] = saved
