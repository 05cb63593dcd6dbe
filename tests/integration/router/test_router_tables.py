"""Routing table sources: a file changed under load loses nothing; the
ConfigMap watch (against a stand-in Kubernetes API server on 127.0.0.1)
lists, watches, re-lists on 410 Gone and keeps the last good table."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp.web
from kubeinfer.localcluster.waiting import async_wait_for
from kubeinfer.router.sources import ConfigMapSource, FileSource
from routerhelpers import HOST, make_table, no_kubernetes_service_host, run_load


def write_table(path: Path, urls: list[str], generation: int, **extra: Any) -> None:
    doc = make_table(urls, generation=generation, **extra).to_dict()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # atomic, like a ConfigMap volume update


async def test_file_change_under_load_loses_nothing(
    mocks, start_router, session, tmp_path: Path
) -> None:
    a, b, c = await mocks(3, delay=0.005)
    url_a, url_b, url_c = (f"http://{HOST}:{m.port}" for m in (a, b, c))
    path = tmp_path / "routes.json"
    write_table(path, [url_a, url_b], 1)
    r = await start_router(None)
    source = FileSource(str(path), r.router.apply_table, r.router.reject_table, interval=0.05)
    assert source.check()
    r.router.spawn(source.run(), "file")
    load = asyncio.create_task(
        run_load(session, r.url, concurrency=8, max_requests=4000, max_seconds=3.0)
    )
    await async_wait_for(_flag(lambda: b.state.requests > 20), 3.0)
    removed_states = list(r.pool.backends.values())
    # b leaves, c joins; b keeps its name but gets a new URL: a new backend.
    write_table(path, [url_a, url_c], 2)
    await async_wait_for(_flag(lambda: r.pool.table.generation == 2), 3.0)
    await async_wait_for(_flag(lambda: c.state.requests > 20), 3.0)
    served_by_b = b.state.requests
    tmp = path.with_suffix(".tmp")
    tmp.write_text("{ this is not a routing table")
    tmp.replace(path)
    await async_wait_for(_flag(lambda: r.router.counters["tableUpdates"].get("error")), 3.0)
    result = await load
    assert result.failed == []
    assert r.pool.table.generation == 2  # the bad document changed nothing
    assert b.state.requests == served_by_b  # nothing more went to the removed backend
    old = [st for st in removed_states if st.url == url_b]
    assert old
    assert old[0].conns.idle == []  # its connections were closed, not kept idle
    assert a.state.requests + b.state.requests + c.state.requests == len(result.statuses)


class FakeKubeApi:
    """Just enough of the Kubernetes API for one ConfigMap: list and watch.

    A stand-in for an external system (not for our code): each watch
    request streams the events put on ``events`` until ``end_watch`` or a
    410 ERROR event, like the real API server's chunked watch responses.
    """

    def __init__(self) -> None:
        self.rv = 10
        self.data: dict[str, str] = {}
        self.lists = 0
        self.watches = 0
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.app = aiohttp.web.Application()
        self.app.router.add_get("/api/v1/namespaces/{ns}/configmaps", self.handle)
        self.runner = aiohttp.web.AppRunner(self.app)
        self.port = 0

    def configmap(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "svc-routes", "namespace": "ns", "resourceVersion": str(self.rv)},
            "data": dict(self.data),
        }

    def set_table(self, table: dict[str, Any] | str) -> dict[str, Any]:
        self.rv += 1
        self.data = {"routes.json": table if isinstance(table, str) else json.dumps(table)}
        return self.configmap()

    async def start(self) -> None:
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, HOST, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.events.put(None)
        await self.runner.cleanup()

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        assert request.query.get("fieldSelector") == "metadata.name=svc-routes"
        if request.query.get("watch") not in ("true", "True", "1"):
            self.lists += 1
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": [self.configmap()] if self.data else [],
                }
            )
        self.watches += 1
        resp = aiohttp.web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        while True:
            event = await self.events.get()
            if event is None:
                break
            await resp.write(json.dumps(event).encode() + b"\n")
            if event["type"] == "ERROR":
                break
        await resp.write_eof()
        return resp


async def test_configmap_watch(mocks, start_router, kubeconfig_env) -> None:
    a, b = await mocks(2)
    api = FakeKubeApi()
    await api.start()
    kubeconfig_env(api.port)
    first = make_table([f"http://{HOST}:{a.port}"], generation=1).to_dict()
    api.set_table(first)
    r = await start_router(None)
    source = ConfigMapSource("ns", "svc-routes", r.router.apply_table, r.router.reject_table)
    try:
        with no_kubernetes_service_host():
            r.router.spawn(source.run(), "watch")
            await async_wait_for(
                _flag(lambda: r.pool.table is not None), 10.0, what="first table from the list"
            )
        assert r.pool.table.generation == 1
        await async_wait_for(_flag(lambda: api.watches == 1), 5.0)

        # A change arrives as a MODIFIED event.
        second = make_table(
            [f"http://{HOST}:{a.port}", f"http://{HOST}:{b.port}"], generation=2
        ).to_dict()
        await api.events.put({"type": "MODIFIED", "object": api.set_table(second)})
        await async_wait_for(_flag(lambda: r.pool.table.generation == 2), 5.0)
        assert len(r.pool.backends) == 2

        # A bad document is logged and ignored.
        await api.events.put({"type": "MODIFIED", "object": api.set_table("{broken")})
        await async_wait_for(_flag(lambda: r.router.counters["tableUpdates"].get("error")), 5.0)
        assert r.pool.table.generation == 2

        # The watch expires (410 Gone): the source lists again and catches up.
        third = make_table([f"http://{HOST}:{b.port}"], generation=3).to_dict()
        api.set_table(third)
        await api.events.put(
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version",
                },
            }
        )
        await async_wait_for(
            _flag(lambda: r.pool.table.generation == 3),
            5.0,
            what="table from the re-list after 410",
        )
        assert api.lists >= 2
        assert list(r.pool.backends) == ["b0"]
    finally:
        await api.stop()


def _flag(check):
    async def poll() -> bool:
        return bool(check())

    return poll
