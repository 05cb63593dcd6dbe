"""How a passed-through stream ended, seen everywhere it must be: the access
log, /metrics, /debug/backends (and the canary verdict read from it),
passive ejection. And /v1/models, which is the worker's own answer.

Mock backends in this process; ``cut`` closes the connection halfway
through a stream (a worker killed), ``nodone`` ends the body cleanly but
without ``data: [DONE]``, ``abort`` ends with vLLM's SIGTERM chunk.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubeinfer.localcluster.ports import free_port
from kubeinfer.operator.analysis import judge_canary, parse_router_stats
from kubeinfer.operator.api import AnalysisSpec
from kubeinfer.operator.api.debugbackends import DebugBackends
from kubeinfer.router.pool import EjectionPolicy
from routerhelpers import HOST, RouterUnderTest, make_table

STREAM = {"model": "tiny", "prompt": "hello", "max_tokens": 8, "stream": True}


async def stream(session: aiohttp.ClientSession, url: str) -> tuple[list[bytes], bool]:
    """The events a client got, and whether the stream ended cleanly for it."""
    events: list[bytes] = []
    async with session.post(url + "/v1/completions", json=STREAM) as resp:
        assert resp.status == 200
        try:
            async for line in resp.content:
                if line.strip():
                    events.append(line.strip())
        except aiohttp.ClientPayloadError:
            return events, False
    return events, True


async def metrics_text(session: aiohttp.ClientSession, r: RouterUnderTest) -> str:
    async with session.get(r.url + "/metrics") as resp:
        return await resp.text()


@pytest.mark.parametrize(
    ("mode", "clean_end", "status", "label", "error"),
    [
        ("ok", True, 200, "200", None),
        ("cut", False, 502, "reset", "stream broken before [DONE]: reset"),
        ("nodone", False, 502, "truncated", "stream broken before [DONE]: body ended"),
        # vLLM's own end of an aborted stream is passed through as it is.
        ("abort", True, 502, "abort", "finish_reason abort"),
        # vLLM when its engine died mid-stream: an error event, then [DONE].
        ("error-event", True, 502, "error", "error event in stream"),
    ],
)
async def test_how_a_stream_ended_is_logged_and_counted(
        mocks: Any, start_router: Any, session: aiohttp.ClientSession, mode: str,
        clean_end: bool, status: int, label: str, error: str | None) -> None:
    (m,) = await mocks(1)
    m.set(mode=mode)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"], revisions=["canary"]))
    events, clean = await stream(session, r.url)
    assert events  # the client got what the worker sent before the end
    assert clean is clean_end
    assert (events[-1] == b"data: [DONE]") is clean_end
    (line,) = r.access_lines()
    assert (line["status"], line["error"], line["backend"]) == (status, error, "b0")
    failed = int(error is not None)
    text = await metrics_text(session, r)
    assert (f'kubeinfer_router_backend_requests_total{{backend="b0",revision="canary",'
            f'status="{label}"}} 1') in text
    assert f'kubeinfer_router_backend_errors_total{{backend="b0",revision="canary"}} {failed}' \
        in text
    assert f'kubeinfer_router_requests_total{{code="{status}"}} 1' in text
    doc = r.debug()
    assert doc["backends"][0]["errors"] == failed
    window = doc["revisions"]["canary"]["window"]
    assert (window["requests"], window["errors"]) == (1, failed)


@pytest.mark.parametrize("mode", ["cut", "nodone"])
async def test_broken_streams_eject_the_worker(mocks: Any, start_router: Any,
                                               session: aiohttp.ClientSession,
                                               mode: str) -> None:
    bad, good = await mocks(2)
    bad.set(mode=mode)
    r = await start_router(make_table([f"http://{HOST}:{bad.port}", f"http://{HOST}:{good.port}"]))
    for _ in range(6):  # round robin: three on each
        await stream(session, r.url)
    doc = r.debug()
    assert [(b["name"], b["ejected"], b["errors"]) for b in doc["backends"]] == [
        ("b0", True, 3), ("b1", False, 0)]
    label = "reset" if mode == "cut" else "truncated"
    assert f'kubeinfer_router_ejections_total{{backend="b0",reason="{label}"}} 1' \
        in await metrics_text(session, r)
    _, clean = await stream(session, r.url)
    assert clean  # the next stream goes to the worker that is left


async def test_a_canary_whose_streams_break_fails_the_analysis(
        mocks: Any, start_router: Any, session: aiohttp.ClientSession) -> None:
    """The operator's verdict, from the router's own /debug/backends document."""
    stable, canary = await mocks(2)
    canary.set(mode="nodone")
    r = await start_router(make_table(
        [f"http://{HOST}:{stable.port}", f"http://{HOST}:{canary.port}"],
        revisions=["stable", "canary"], revisionWeights={"stable": 50, "canary": 50},
        retries=0), ejection=EjectionPolicy(consecutive_failures=1000))  # keep it in rotation
    for _ in range(20):
        await stream(session, r.url)
    async with session.get(r.url + "/debug/backends") as resp:
        stats = parse_router_stats([DebugBackends.model_validate_json(await resp.read())])
    verdict = judge_canary(
        analysis=AnalysisSpec(min_requests=5, max_error_rate=0.05),
        canary=stats.revision("canary"), canary_baseline=(0, 0),
        stable=stats.revision("stable"), interval_elapsed=True)
    canary_counts = stats.revision("canary")
    assert (canary_counts.requests, canary_counts.errors) == (10, 10)
    assert verdict.passed is False
    assert verdict.message.startswith("canary error rate 100.0%")


async def test_models_is_the_workers_answer(mocks: Any, start_router: Any,
                                            session: aiohttp.ClientSession) -> None:
    (m,) = await mocks(1)
    r = await start_router(make_table([f"http://{HOST}:{m.port}"]))
    async with session.get(r.url + "/v1/models") as resp:
        assert resp.status == 200
        assert resp.headers["x-kubeinfer-backend"] == "b0"
        models = await resp.json()
    (model,) = models["data"]
    assert (model["id"], model["owned_by"], model["max_model_len"]) == ("tiny", "vllm", 512)
    (line,) = r.access_lines()
    assert (line["path"], line["status"], line["backend"], line["error"]) == (
        "/v1/models", 200, "b0", None)


@pytest.mark.parametrize("healthy", [True, False])
async def test_models_falls_back_to_the_routers_own_answer(
        start_router: Any, session: aiohttp.ClientSession, healthy: bool) -> None:
    # Nothing listens on the port: a worker that is gone.
    r = await start_router(make_table([f"http://{HOST}:{free_port()}"],
                                      healthCheck={"intervalSeconds": 60}))
    r.pool.backends["b0"].healthy = healthy
    async with session.get(r.url + "/v1/models") as resp:
        assert resp.status == 200
        assert "x-kubeinfer-backend" not in resp.headers
        models = await resp.json()
    assert [(d["id"], d["owned_by"]) for d in models["data"]] == [("tiny", "kubeinfer")]
    (line,) = r.access_lines()
    assert line["error"] == ("own answer: b0: connect" if healthy
                             else "own answer: no healthy backend")
