"""Cache-aware routing on real processes: kubeinfer-router(s) in front of
simulated vLLM workers with the KV-cache model (loopback). On a
shared-prefix workload the cache hit rate the workers report
(vllm:prefix_cache_hits / queries) is far above round-robin's, with one
router and with two router processes taking turns (replicas must agree on
where a prefix lives). Each worker's cache holds about one system prompt,
so a worker that sees every prompt (round-robin) keeps evicting them, and
so would workers that two disagreeing routers send the same prompt to."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.waiting import async_wait_for
from prometheus_client.parser import text_string_to_metric_families
from routerhelpers import HOST

WORKERS = 4
PROMPTS = 4
REQUESTS = 48
# A 4,000-character system prompt is ~1,000 tokens = 62 blocks of 16: the
# cache (80 blocks) holds one prompt and a bit.
SIMULATOR = {"ttftMs": 0, "tpotMs": 1, "maxNumSeqs": 8, "kvCacheBlocks": 80, "kvBlockSize": 16}
MODEL = {"name": "tiny", "source": "sim/tiny", "engineArgs": {"maxModelLen": 4096}}


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(10)
    procs.clear()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    stop(procs)


def spawn(procs: list[subprocess.Popen[bytes]], *argv: str) -> None:
    procs.append(subprocess.Popen([sys.executable, "-P", "-m", *argv],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


async def until_ok(session: aiohttp.ClientSession, url: str) -> None:
    async def ok() -> bool:
        try:
            async with session.get(url) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await async_wait_for(ok, 20.0, interval=0.05, what=url)


async def hit_rate(strategy: str, procs: list[subprocess.Popen[bytes]], tmp: Path,
                   routers: int = 1) -> float:
    async with aiohttp.ClientSession() as session:
        workers = []
        for _ in range(WORKERS):
            port = free_port()
            spawn(procs, "kubeinfer.worker.simulated", "--model-spec", json.dumps(MODEL),
                  "--simulator-spec", json.dumps(SIMULATOR), "--host", HOST, "--port", str(port))
            workers.append(f"http://{HOST}:{port}")
        routes = tmp / f"routes-{strategy}-{routers}.json"
        routes.write_text(json.dumps({
            "service": "svc", "model": "tiny", "strategy": strategy,
            "backends": [{"name": f"w{i}", "url": u, "revision": "r1"}
                         for i, u in enumerate(workers)],
        }))
        urls = []
        for _ in range(routers):
            port = free_port()
            spawn(procs, "kubeinfer.router.main", "--config", str(routes), "--host", HOST,
                  "--port", str(port))
            urls.append(f"http://{HOST}:{port}")
        for u in workers:
            await until_ok(session, u + "/health")
        for router in urls:
            await until_ok(session, router + "/readyz")
        rng = random.Random(5)
        systems = [f"[prompt {i}] " + "".join(rng.choice("abcdefgh ") for _ in range(4000))
                   for i in range(PROMPTS)]
        for n in range(REQUESTS):
            body = {"model": "tiny", "max_tokens": 2, "messages": [
                {"role": "system", "content": rng.choice(systems)},
                {"role": "user", "content": f"question {n}"}]}
            router = urls[n % routers]
            async with session.post(router + "/v1/chat/completions", json=body) as r:
                assert r.status == 200, await r.text()
                await r.read()
        hits = queries = 0.0
        for u in workers:
            async with session.get(u + "/metrics") as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("vllm:prefix_cache_hits_total{"):
                        hits += float(line.rsplit(" ", 1)[1])
                    elif line.startswith("vllm:prefix_cache_queries_total{"):
                        queries += float(line.rsplit(" ", 1)[1])
        assert queries > 0
    stop(procs)  # before the next setup starts its own
    return hits / queries


async def test_cache_aware_routing_hits_the_cache_far_more_than_round_robin(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    rr = await hit_rate("round-robin", processes, tmp_path)
    rates = {(strategy, routers): await hit_rate(strategy, processes, tmp_path, routers)
             for strategy in ("prefix-affinity", "prefix-score") for routers in (1, 2)}
    print(f"hit rate: round-robin {rr:.0%}, "
          + ", ".join(f"{s} x{n} {v:.0%}" for (s, n), v in rates.items()))
    for (strategy, routers), rate in rates.items():
        assert rate > 2 * rr, (strategy, routers, rate, rr)
        assert rate > 0.5, (strategy, routers, rate, rr)


async def router_gauges(session: aiohttp.ClientSession, router: str) -> dict[str, float]:
    async with session.get(router + "/metrics") as r:
        text = await r.text()
    return {f.name: f.samples[0].value for f in text_string_to_metric_families(text)
            if f.name in ("kubeinfer_router_prefill_pending_blocks", "kubeinfer_router_in_flight")}


async def test_prefix_score_counts_a_prompts_prefill_until_its_first_token(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The prefill prefix-score sees ahead on a worker is the prompt's blocks
    from the moment it is sent until the worker's first token (3 s of
    prefill here), not while the answer streams or after it."""
    slow = {"ttftMs": 0, "prefillUsPerToken": 3000, "prefillSerial": True, "tpotMs": 300,
            "maxNumSeqs": 8, "kvCacheBlocks": 400, "kvBlockSize": 16}
    port = free_port()
    spawn(processes, "kubeinfer.worker.simulated", "--model-spec", json.dumps(MODEL),
          "--simulator-spec", json.dumps(slow), "--host", HOST, "--port", str(port))
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({
        "service": "svc", "model": "tiny", "strategy": "prefix-score",
        "backends": [{"name": "w0", "url": f"http://{HOST}:{port}", "revision": "r1"}],
    }))
    router = f"http://{HOST}:{free_port()}"
    spawn(processes, "kubeinfer.router.main", "--config", str(routes), "--host", HOST,
          "--port", router.rsplit(":", 1)[1])
    body = {"model": "tiny", "max_tokens": 8, "stream": True, "messages": [
        {"role": "system", "content": "s" * 4000}, {"role": "user", "content": "q"}]}
    async with aiohttp.ClientSession() as session:
        await until_ok(session, f"http://{HOST}:{port}/health")
        await until_ok(session, router + "/readyz")
        idle = await router_gauges(session, router)
        assert idle["kubeinfer_router_prefill_pending_blocks"] == 0, idle
        async with session.post(router + "/v1/chat/completions", json=body) as r:
            assert r.status == 200
            # The router answers with its head at once; the prefill is ahead.
            during = await router_gauges(session, router)
            assert during["kubeinfer_router_prefill_pending_blocks"] >= 4000 // 256, during
            first = await r.content.readline()
            assert first.startswith(b"data: "), first
            streaming = await router_gauges(session, router)
            assert streaming == {"kubeinfer_router_prefill_pending_blocks": 0,
                                 "kubeinfer_router_in_flight": 1}, streaming
            rest = await r.read()
            assert rest.rstrip().endswith(b"data: [DONE]")
        plain = {**body, "stream": False,
                 "messages": [*body["messages"], {"role": "user", "content": "more " * 80}]}
        async with session.post(router + "/v1/chat/completions", json=plain) as r:
            assert r.status == 200, await r.text()
        after = await router_gauges(session, router)
        assert after == {"kubeinfer_router_prefill_pending_blocks": 0,
                         "kubeinfer_router_in_flight": 0}, after
