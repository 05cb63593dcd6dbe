"""Failure handling against real backend processes on 127.0.0.1: kill -9
under load, hangs, dead engines, aborted streams, bounded retries, the
wait queue. Loads are bounded in count and time; waits poll with deadlines."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.waiting import async_wait_for
from kubeinfer.router.pool import EjectionPolicy
from routerhelpers import HOST, make_table, run_load

COMPLETION = {"model": "tiny", "prompt": "hello", "max_tokens": 8}


async def test_kill_9_under_load_loses_no_request(mock_processes, start_router, session) -> None:
    procs = await mock_processes(3, "--delay", "0.02")
    r = await start_router(make_table([p.url for p in procs]))
    victim = r.pool.backends["b0"]
    load = asyncio.create_task(
        run_load(session, r.url, concurrency=12, max_requests=3000, max_seconds=3.0)
    )

    async def busy() -> bool:
        return victim.in_flight > 0 and victim.stats.requests > 50

    await async_wait_for(busy, 5.0, interval=0.01, what="load on the victim")
    procs[0].kill()
    killed_at = time.monotonic()

    async def out_of_rotation() -> bool:
        return not victim.available(time.monotonic())

    await async_wait_for(out_of_rotation, 2.0, interval=0.01, what="victim out of rotation")
    out_after = time.monotonic() - killed_at
    result = await load
    assert result.failed == [], result.failed[:5]
    assert out_after < 2.0
    assert len(result.statuses) > 200
    # The in-flight attempts on the victim failed and were retried elsewhere.
    doc = r.debug()
    assert doc["backends"][0]["errors"] > 0
    assert r.router.counters["retries"]
    # It stays out: the active health check keeps failing.
    await async_wait_for(lambda: _unhealthy(victim), 3.0, what="health check marks it down")


async def _unhealthy(b) -> bool:
    return not b.healthy


async def test_connection_refused_backend_is_skipped(mock_processes, start_router, session) -> None:
    (alive,) = await mock_processes(1)
    r = await start_router(make_table([f"http://{HOST}:{free_port()}", alive.url]))
    result = await run_load(session, r.url, concurrency=4, max_requests=100, max_seconds=5.0)
    assert result.failed == []
    assert set(result.backends) == {"b1"}
    assert r.debug()["backends"][0]["ejected"] or not r.pool.backends["b0"].healthy


async def test_hanging_backend_is_ejected_and_its_requests_retried(
    mock_processes, start_router, session
) -> None:
    procs = await mock_processes(2)
    await procs[0].set(session, mode="hang")  # /health stays 200, like a hung vLLM engine
    r = await start_router(make_table([p.url for p in procs], stallTimeoutSeconds=0.5))
    start = time.monotonic()
    result = await run_load(session, r.url, concurrency=4, max_requests=40, max_seconds=10.0)
    assert result.failed == []
    assert time.monotonic() - start < 5.0
    assert r.router.counters["ejections"].get("b0|stall", 0) >= 1
    assert r.debug()["backends"][0]["errors"] >= 1
    assert r.pool.backends["b0"].healthy  # the health check alone would never catch it


async def test_dead_engine_500_is_retried_and_counted(
    mock_processes, start_router, session
) -> None:
    procs = await mock_processes(2)
    await procs[1].set(session, mode="engine-dead")
    r = await start_router(
        make_table(
            [p.url for p in procs],
            revisions=["stable", "canary"],
            revisionWeights={"stable": 50, "canary": 50},
        )
    )
    result = await run_load(session, r.url, concurrency=1, max_requests=20, max_seconds=10.0)
    assert result.failed == []
    doc = r.debug()
    # Clients saw no error, but the canary's failures are on record.
    assert doc["revisions"]["canary"]["errors"] >= 1
    assert doc["revisions"]["canary"]["window"]["errorRate"] > 0
    assert doc["revisions"]["stable"]["errors"] == 0


async def test_dead_engine_is_ejected_with_growing_time_out(
    mock_processes, start_router, session
) -> None:
    procs = await mock_processes(2)
    await procs[1].set(session, mode="engine-dead")
    r = await start_router(
        make_table([p.url for p in procs]),
        ejection=EjectionPolicy(consecutive_failures=2, base_seconds=0.3, max_seconds=5.0),
    )
    dead = r.pool.backends["b1"]
    stop = asyncio.Event()
    load = asyncio.create_task(
        run_load(session, r.url, concurrency=2, max_requests=2000, max_seconds=8.0, stop=stop)
    )
    # Re-admitted after its time out, it fails again and goes out for longer.
    await async_wait_for(
        _flag(lambda: dead.ejections >= 2), 6.0, interval=0.02, what="a second ejection"
    )
    stop.set()
    result = await load
    assert result.failed == []
    assert dead.ejected_until - dead.last_ejected_at > 0.3  # doubled
    assert r.router.counters["ejections"]["b1|500"] >= 2


async def test_active_health_check_takes_backends_out_and_back(
    mock_processes, start_router, session
) -> None:
    procs = await mock_processes(2)
    r = await start_router(make_table([p.url for p in procs]))
    b0 = r.pool.backends["b0"]
    await procs[0].set(session, health=503)  # e.g. the agent's /ready while draining
    await async_wait_for(
        _flag(lambda: not b0.healthy), 3.0, interval=0.02, what="two failed checks"
    )
    result = await run_load(session, r.url, concurrency=2, max_requests=20, max_seconds=5.0)
    assert set(result.backends) == {"b1"}
    assert r.debug()["backends"][0]["healthy"] is False
    await procs[0].set(session, health=200)
    await async_wait_for(_flag(lambda: b0.healthy), 3.0, interval=0.02, what="one good check")
    result = await run_load(session, r.url, concurrency=1, max_requests=10, max_seconds=5.0)
    assert set(result.backends) == {"b0", "b1"}


async def test_aborted_stream_counts_as_a_failure(mock_processes, start_router, session) -> None:
    (p,) = await mock_processes(1)
    await p.set(session, mode="abort")
    r = await start_router(make_table([p.url]))
    body = {**COMPLETION, "stream": True}
    async with session.post(r.url + "/v1/completions", json=body) as resp:
        assert resp.status == 200
        events = [line async for line in resp.content if line.strip()]
    last = json.loads(events[-3][len(b"data: ") :])
    assert last["choices"][0]["finish_reason"] == "abort"  # passed through untouched
    assert events[-1] == b"data: [DONE]\n"
    assert r.debug()["backends"][0]["errors"] == 1
    assert r.access_lines()[-1]["error"] == "finish_reason abort"


async def test_retries_are_bounded(mock_processes, start_router, session) -> None:
    procs = await mock_processes(4)
    for p in procs:
        await p.set(session, mode="status", status=503)
    r = await start_router(make_table([p.url for p in procs], retries=2))
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 503  # the last backend's answer
        await resp.read()
    attempts = [(await p.stats(session))["requests"] for p in procs]
    assert sum(attempts) == 3  # one try and two retries, each on another backend
    assert max(attempts) == 1
    assert r.access_lines()[-1]["retries"] == 2


async def test_client_errors_are_not_retried(mock_processes, start_router, session) -> None:
    procs = await mock_processes(2)
    for p in procs:
        await p.set(session, mode="status", status=400)
    r = await start_router(make_table([p.url for p in procs]))
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 400
    assert sum([(await p.stats(session))["requests"] for p in procs]) == 1
    assert r.debug()["backends"][0]["errors"] == 0


async def test_no_retry_after_the_stream_started(mock_processes, start_router, session) -> None:
    procs = await mock_processes(2, "--chunks", "20", "--chunk-delay", "0.05")
    r = await start_router(make_table([p.url for p in procs]))
    body = {**COMPLETION, "stream": True}
    got = b""
    async with session.post(r.url + "/v1/completions", json=body) as resp:
        assert resp.status == 200
        chosen = resp.headers["x-kubeinfer-backend"]
        victim = procs[int(chosen[1:])]
        try:
            async for chunk in resp.content.iter_any():
                got += chunk
                if got.count(b"data:") >= 3 and victim.proc.poll() is None:
                    victim.kill()
        except aiohttp.ClientPayloadError:
            pass  # the router cut the connection: the honest end of a broken stream
    assert b"[DONE]" not in got
    other = procs[1 - int(chosen[1:])]
    assert (await other.stats(session))["requests"] == 0


async def test_full_queue_answers_429(mock_processes, start_router, session) -> None:
    (p,) = await mock_processes(1, "--delay", "0.5")
    r = await start_router(
        make_table(
            [p.url], queueSize=1, queueTimeoutSeconds=5, backend_extra=[{"maxConcurrency": 1}]
        )
    )

    async def one() -> tuple[int, str | None]:
        async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
            await resp.read()
            return resp.status, resp.headers.get("retry-after")

    first = asyncio.create_task(one())
    await async_wait_for(_flag(lambda: r.pool.backends["b0"].in_flight == 1), 2.0)
    second = asyncio.create_task(one())
    await async_wait_for(_flag(lambda: r.pool.queue_length == 1), 2.0)
    third = await one()
    assert third == (429, "1")
    assert (await first)[0] == 200
    assert (await second)[0] == 200  # waited for the slot, then served


async def test_queue_wait_past_deadline_is_429(mock_processes, start_router, session) -> None:
    (p,) = await mock_processes(1, "--delay", "1.0")
    r = await start_router(
        make_table(
            [p.url], queueSize=4, queueTimeoutSeconds=0.2, backend_extra=[{"maxConcurrency": 1}]
        )
    )
    first = asyncio.create_task(session.post(r.url + "/v1/completions", json=COMPLETION))
    await async_wait_for(_flag(lambda: r.pool.backends["b0"].in_flight == 1), 2.0)
    async with session.post(r.url + "/v1/completions", json=COMPLETION) as resp:
        assert resp.status == 429
        assert resp.headers["retry-after"] == "1"
    (await first).release()


def _flag(check):
    async def poll() -> bool:
        return bool(check())

    return poll
