"""The router in front of real vLLM: streams broken by a dying worker, /v1/models.

The router runs as users run it (`kubeinfer-router --config`, a process of
its own, access log in a file); vLLM is the CPU build with the tiny model.
What vLLM 0.32 does to a running stream when it is killed is recorded in
docs/router.md ("Broken streams").
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubeinfer.localcluster.realvllm.server import MAX_MODEL_LEN, SERVED_NAME, VllmServer, free_port
from kubeinfer.localcluster.waiting import async_wait_for

HOST = "127.0.0.1"
# Long enough that the stream is still running when the worker is killed:
# the tiny model makes ~100 tokens a second on two busy cores.
MAX_TOKENS = 400
LONG_STREAM = {"model": SERVED_NAME, "prompt": "hello", "max_tokens": MAX_TOKENS,
               "ignore_eos": True, "stream": True}
KILL_AFTER_EVENTS = 20
# Each test here cold-starts a vLLM server of its own (it gets killed): on a
# busy shared 2-core machine that has taken over 240 s.
COLD_START_S = 480.0


class RouterProcess:
    """`python -m kubeinfer.router.main --config` with one backend per vLLM server."""

    def __init__(self, folder: Path, backends: list[tuple[str, str, str]],
                 env: dict[str, str] | None = None) -> None:
        routes = folder / "routes.json"
        routes.write_text(json.dumps({
            "service": "svc", "model": SERVED_NAME, "strategy": "round-robin",
            "backends": [{"name": n, "url": u, "revision": r} for n, u, r in backends],
            "healthCheck": {"intervalSeconds": 0.2, "timeoutSeconds": 1.0},
            # vLLM on SIGTERM can leave a stream open with nothing more to
            # come (docs/router.md, "Stream accounting"): cut it sooner than 30 s.
            "stallTimeoutSeconds": 10,
        }))
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.access_log = folder / "access.log"
        self.log = folder / "router.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "kubeinfer.router.main", "--config", str(routes),
                 "--host", HOST, "--port", str(self.port), "--access-log", str(self.access_log),
                 "--scrape-interval", "0.5"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        async def ready() -> bool:
            async with session.get(self.url + "/readyz") as r:
                return r.status == 200
        await async_wait_for(ready, 20.0, interval=0.05, what=f"router at {self.url}")

    def access_lines(self) -> list[dict[str, Any]]:
        text = self.access_log.read_text() if self.access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]

    async def debug(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(self.url + "/debug/backends") as r:
            doc: dict[str, Any] = await r.json()
            return doc

    async def metric(self, session: aiohttp.ClientSession, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        async with session.get(self.url + "/metrics") as r:
            text = await r.text()
        total = 0.0
        want = [f'{k}="{v}"' for k, v in labels.items()]
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if (series == name or series.startswith(name + "{")) and all(
                    w in series for w in want):
                total += float(value)
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest.fixture
async def start_router(tmp_path: Path, session: aiohttp.ClientSession
                       ) -> AsyncIterator[Callable[..., Awaitable[RouterProcess]]]:
    """``await start_router([(name, url, revision)], env=...)``: a ready router process."""
    routers: list[RouterProcess] = []

    async def start(backends: list[tuple[str, str, str]], **kwargs: Any) -> RouterProcess:
        folder = tmp_path / f"router-{len(routers)}"
        folder.mkdir()
        r = RouterProcess(folder, backends, **kwargs)
        routers.append(r)
        await r.wait_ready(session)
        return r

    yield start
    for r in routers:
        r.stop()


async def stream_and_signal(session: aiohttp.ClientSession, url: str, server: VllmServer,
                            sig: signal.Signals) -> tuple[list[bytes], str | None]:
    """Stream a long completion through the router; signal vLLM's process group
    after a few events. Returns the SSE events the client got and how the
    stream ended for it (None: cleanly; else the client's error)."""
    events: list[bytes] = []
    ended: str | None = None
    async with session.post(url + "/v1/completions", json=LONG_STREAM) as response:
        assert response.status == 200
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                events.append(line.strip())
                if len(events) == KILL_AFTER_EVENTS:
                    server.signal_group(sig)
        except aiohttp.ClientError as error:
            ended = repr(error)
    return events, ended


def finish_reasons(events: list[bytes]) -> list[str]:
    out = []
    for e in events:
        if e.startswith(b"data: {"):
            for choice in json.loads(e[len(b"data: "):]).get("choices", []):
                if choice.get("finish_reason"):
                    out.append(choice["finish_reason"])
    return out


@pytest.mark.timeout(COLD_START_S + 120)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_a_stream_broken_by_a_dying_worker_is_an_error_everywhere(
        start_vllm: Callable[..., VllmServer],
        start_router: Callable[..., Awaitable[RouterProcess]],
        session: aiohttp.ClientSession, sig: signal.Signals) -> None:
    server = start_vllm()
    await asyncio.to_thread(server.wait_ready, COLD_START_S)
    router = await start_router([("w0", server.url, "canary")])
    events, ended = await stream_and_signal(session, router.url, server, sig)
    reasons = finish_reasons(events)
    print(f"{sig.name}: the client got {len(events)} events, ended={ended}, "
          f"finish reasons {reasons}, last two {[e[:120] for e in events[-2:]]!r}")
    # The stream really was cut short: not 400 tokens, no clean "length" end.
    assert len(events) < MAX_TOKENS
    assert "length" not in reasons
    if any(e.startswith(b'data: {"error"') for e in events):
        # SIGTERM killed the engine core first: vLLM sent an error event, then [DONE].
        assert events[-1] == b"data: [DONE]"
        expected_error = "error event in stream"
    elif "abort" in reasons:
        # vLLM's SIGTERM handler aborted the request and ended the stream itself.
        assert events[-1] == b"data: [DONE]"
        expected_error = "finish_reason abort"
    else:
        assert events[-1] != b"data: [DONE]"
        assert ended is not None  # the client sees an incomplete response, not a clean end
        expected_error = "stream broken before [DONE]"

    async def logged() -> list[dict[str, Any]]:
        return [x for x in router.access_lines() if x["path"] == "/v1/completions"]
    (line,) = await async_wait_for(logged, 5.0, interval=0.05, what="the access log line")
    assert line["backend"] == "w0"
    assert line["status"] == 502, line
    assert line["error"] is not None, line
    assert line["error"].startswith(expected_error), line

    async def metric(name: str, **labels: str) -> float:
        return await router.metric(session, name, **labels)
    assert await metric("kubeinfer_router_backend_errors_total", backend="w0") == 1
    assert await metric("kubeinfer_router_revision_errors_total", revision="canary") == 1
    assert await metric("kubeinfer_router_backend_requests_total", backend="w0",
                        status="200") == 0
    assert await metric("kubeinfer_router_requests_total", code="502") == 1
    assert await metric("kubeinfer_router_requests_total", code="200") == 0

    doc = await router.debug(session)
    (backend,) = doc["backends"]
    assert (backend["requests"], backend["errors"]) == (1, 1)
    canary = doc["revisions"]["canary"]
    assert (canary["requests"], canary["errors"]) == (1, 1)
    assert (canary["window"]["requests"], canary["window"]["errors"]) == (1, 1)
    assert canary["window"]["errorRate"] == 1.0


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """vLLM's /v1/models minus what it makes up per call (time, random permission id)."""
    out = json.loads(json.dumps(doc))
    for model in out["data"]:
        model.pop("created")
        for permission in model.get("permission", []):
            permission.pop("created")
            permission.pop("id")
    return out


async def test_models_through_the_router_are_vllms_own(
        shared_vllm: VllmServer, start_router: Callable[..., Awaitable[RouterProcess]],
        session: aiohttp.ClientSession) -> None:
    router = await start_router([("w0", shared_vllm.url, "r1")],
                                env={"KUBEINFER_API_KEY": "sesame"})
    async with session.get(shared_vllm.url + "/v1/models") as r:
        direct = await r.json()
    async with session.get(router.url + "/v1/models") as r:
        assert r.status == 401  # the API key still guards it
    async with session.get(router.url + "/v1/models",
                           headers={"authorization": "Bearer sesame"}) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("application/json")
        routed = await r.json()
    (model,) = routed["data"]
    assert model["max_model_len"] == MAX_MODEL_LEN
    assert model["owned_by"] == "vllm"
    assert _comparable(routed) == _comparable(direct)
