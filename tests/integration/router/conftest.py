"""Fixtures for router tests: mock backends (in this process or as real
processes that can be killed) and a router in this process. Everything
listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubeinfer.localcluster.mockbackend import MockBackend, MockConfig, serve
from kubeinfer.localcluster.ports import free_port
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router.app import Router
from kubeinfer.router.config import Settings
from routerhelpers import HOST, MockProcess, RouterUnderTest


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


@pytest.fixture
async def mocks() -> AsyncIterator[Callable[..., Awaitable[list[MockBackend]]]]:
    """Mock backends in this process: ``await mocks(n, delay=..., slots=...)``."""
    started: list[MockBackend] = []

    async def start(n: int, **config: Any) -> list[MockBackend]:
        out = await serve(HOST, [0] * n, MockConfig(**config))
        started.extend(out)
        return out

    yield start
    for b in started:
        b.close()


@pytest.fixture
async def mock_processes(
    session: aiohttp.ClientSession,
) -> AsyncIterator[Callable[..., Awaitable[list[MockProcess]]]]:
    """Mock backends as processes: ``await mock_processes(n, "--delay", "0.01")``."""
    started: list[MockProcess] = []

    async def start(n: int, *args: str) -> list[MockProcess]:
        procs = [MockProcess(free_port(), list(args)) for _ in range(n)]
        started.extend(procs)
        for p in procs:
            await p.ready(session)
        return procs

    yield start
    for p in started:
        p.kill()


@pytest.fixture
async def start_router(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RouterUnderTest]]]:
    """A router in this process: ``await start_router(table, **settings)``."""
    routers: list[Router] = []

    async def start(table: RoutingTable | None, **settings: Any) -> RouterUnderTest:
        log = tmp_path / f"access-{len(routers)}.log"
        opts: dict[str, Any] = {
            "host": HOST,
            "port": 0,
            "access_log": str(log),
            "scrape_interval": 0.5,
        }
        opts.update(settings)
        router = Router(Settings(**opts))
        if table is not None:
            router.apply_table(table, "test")
        await router.start()
        routers.append(router)
        return RouterUnderTest(router, f"http://{HOST}:{router.port}", log)

    yield start
    for r in routers:
        await r.stop(drain_seconds=0)


@pytest.fixture
def kubeconfig_env(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Point KUBECONFIG at a (fake) API server on 127.0.0.1:port."""
    saved = os.environ.get("KUBECONFIG")

    def write(port: int) -> Path:
        path = tmp_path / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "t",
                    "clusters": [{"name": "t", "cluster": {"server": f"http://{HOST}:{port}"}}],
                    "users": [{"name": "t", "user": {"token": "test"}}],
                    "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
                }
            )
        )
        os.environ["KUBECONFIG"] = str(path)
        return path

    yield write
    if saved is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = saved
