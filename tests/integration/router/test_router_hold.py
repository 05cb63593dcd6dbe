"""Scale from zero, router side: with no worker the router stays ready, holds
requests (bounded, with a deadline), reports the demand and dispatches them
as soon as a worker appears in the routing table."""

from __future__ import annotations

import asyncio

from kubeinfer.localcluster.waiting import async_wait_for
from prometheus_client.parser import text_string_to_metric_families
from routerhelpers import HOST, make_table

COMPLETION = {"model": "tiny", "prompt": "hello", "max_tokens": 4}


def queued(r, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(r.debug()["queue"]["length"] == n)

    return check


async def test_held_requests_are_served_when_a_worker_appears(mocks, start_router, session) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([], holdSeconds=30))
    async with session.get(r.url + "/readyz") as resp:
        assert resp.status == 200  # stays in the Service: it is what brings workers back

    async def post() -> int:
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            return resp.status

    held = [asyncio.create_task(post()) for _ in range(3)]
    await async_wait_for(queued(r, 3), 5.0, what="3 held")
    doc = r.debug()
    assert doc["demand"]["arrivals"] == 3
    assert doc["demand"]["idleSeconds"] < 5
    assert not any(t.done() for t in held)
    r.router.apply_table(make_table([f"http://{HOST}:{m.port}"], holdSeconds=30), "test")
    assert await asyncio.gather(*held) == [200, 200, 200]
    assert m.state.requests == 3
    async with session.get(r.url + "/metrics") as resp:
        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert families["kubeinfer_router_arrivals"].samples[0].value == 3


async def test_past_the_hold_a_request_gets_429_with_retry_after(start_router, session) -> None:
    r = await start_router(make_table([], holdSeconds=0.5))
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 429
        assert int(resp.headers["retry-after"]) >= 1
        body = await resp.json()
        assert body["error"]["type"] == "RateLimitError"
        assert "0.5s" in body["error"]["message"]


async def test_the_hold_is_bounded_by_the_queue_size(start_router, session) -> None:
    r = await start_router(make_table([], holdSeconds=30, queueSize=2))

    async def post() -> int:
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            return resp.status

    held = [asyncio.create_task(post()) for _ in range(2)]
    await async_wait_for(queued(r, 2), 5.0, what="2 held")
    assert await post() == 429  # the third finds the queue full
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)


async def test_without_a_hold_no_worker_is_503_and_not_ready(start_router, session) -> None:
    r = await start_router(make_table([]))
    async with session.get(r.url + "/readyz") as resp:
        assert resp.status == 503
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 503
