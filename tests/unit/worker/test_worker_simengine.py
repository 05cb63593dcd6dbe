"""The simulated engine in-process: service-time model, queueing and faults.

Its HTTP fidelity to vLLM is checked against a real process in
tests/integration/worker/test_worker_fidelity.py.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import RawTestServer, TestClient
from kubeinfer.operator.api import ModelSpec, SimulatorSpec
from kubeinfer.worker.faults import EngineFaults
from kubeinfer.worker.simulated.engine import SimulatedEngine
from kubeinfer.worker.simulated.server import EngineServer
from kubeinfer.worker.simulated.text import TokenSource

DEADLINE_S = 5.0


@dataclass
class Sim:
    engine: SimulatedEngine
    client: TestClient[Any, Any]
    crashes: list[str] = field(default_factory=list)
    xids: list[int] = field(default_factory=list)

    async def complete(self, prompt: str = "hi", **body: Any) -> tuple[int, dict[str, Any]]:
        payload = {"model": "tiny", "prompt": prompt, "max_tokens": 4, **body}
        async with self.client.post("/v1/completions", json=payload) as response:
            return response.status, await response.json()

    async def stream_events(self, **body: Any) -> list[bytes]:
        payload = {"model": "tiny", "prompt": "hi", "max_tokens": 4, "stream": True, **body}
        async with self.client.post("/v1/completions", json=payload) as response:
            raw = await response.read()
        return [event for event in raw.split(b"\n\n") if event]


Make = Callable[..., Awaitable[Sim]]


@pytest.fixture
def make_sim(aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]) -> Make:
    async def make(seed: int = 0, max_model_len: int = 512, **simulator: Any) -> Sim:
        model = ModelSpec.model_validate(
            {"name": "tiny", "source": "org/tiny", "engineArgs": {"maxModelLen": max_model_len}}
        )
        spec = SimulatorSpec.model_validate({"ttftMs": 0, "tpotMs": 0, "seed": seed, **simulator})
        crashes: list[str] = []
        xids: list[int] = []
        engine = SimulatedEngine(model, spec, on_crash=crashes.append, on_gpu_fault=xids.append)
        server = EngineServer(engine, TokenSource(spec.seed))
        client = await aiohttp_client(RawTestServer(server.handle))
        return Sim(engine, client, crashes, xids)

    return make


async def until(predicate: Callable[[], bool], within_s: float = DEADLINE_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


async def test_same_seed_same_answer(make_sim: Make) -> None:
    first, second, other = await make_sim(seed=7), await make_sim(seed=7), await make_sim(seed=8)
    _, a = await first.complete("the same prompt", max_tokens=12)
    _, b = await second.complete("the same prompt", max_tokens=12)
    _, c = await other.complete("the same prompt", max_tokens=12)
    assert a["choices"][0]["text"] == b["choices"][0]["text"] != c["choices"][0]["text"]
    assert a["usage"]["completion_tokens"] == 12


async def test_stream_and_non_stream_agree(make_sim: Make) -> None:
    sim = await make_sim(seed=3)
    _, body = await sim.complete("abc", max_tokens=6)
    events = await sim.stream_events(prompt="abc", max_tokens=6)
    assert events[-1] == b"data: [DONE]"
    texts = [json.loads(event[6:])["choices"][0]["text"] for event in events[:-1]]
    assert "".join(texts) == body["choices"][0]["text"]


async def test_batch_slots_and_queue(make_sim: Make) -> None:
    sim = await make_sim(maxNumSeqs=2, tpotMs=50)
    requests = [asyncio.create_task(sim.complete(max_tokens=10)) for _ in range(5)]
    await until(lambda: sim.engine.running == 2 and sim.engine.waiting == 3)
    assert sim.engine.kv_usage() > 0
    results = await asyncio.gather(*requests)
    assert all(status == 200 for status, _ in results)
    assert (sim.engine.running, sim.engine.waiting, sim.engine.kv_tokens) == (0, 0, 0)
    metrics = sim.engine.metrics
    # Three waves of ~0.45 s: the later requests queued.
    assert metrics.queue_time.total > 0.2
    assert metrics.finished["length"] == 5


async def test_service_time(make_sim: Make) -> None:
    sim = await make_sim(ttftMs=50, tpotMs=10, prefillUsPerToken=1000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # 40 characters = 10 prompt tokens: 50 ms + 10 x 1 ms prefill, then 9 x 10 ms decode.
    status, _ = await sim.complete("x" * 40, max_tokens=10)
    elapsed = loop.time() - started
    assert status == 200
    assert 0.14 <= elapsed < 3.0  # generous: a busy machine only adds
    # A busy machine only makes sleeps longer, so the bounds are orders, not
    # a window: the first token needs 50 ms + 10 ms of prefill, and 9 decode
    # steps of 10 ms still followed it (1 ms for the clock's granularity).
    ttft = sim.engine.metrics.ttft.total
    assert 0.06 - 0.001 <= ttft <= elapsed - 0.09 + 0.001


async def test_prefix_cache_skips_prefill_and_is_exported(make_sim: Make) -> None:
    # 4,000 characters = 1,000 tokens at 1 ms each: 1 s of prefill uncached.
    sim = await make_sim(
        max_model_len=2048, ttftMs=0, tpotMs=1, prefillUsPerToken=1000, kvCacheBlocks=1000
    )
    prompt = "".join(f"{i:04d}" for i in range(1000))
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(2):
        started = loop.time()
        assert (await sim.complete(prompt, max_tokens=2))[0] == 200
        times.append(loop.time() - started)
    assert times[0] >= 0.95
    assert times[1] < 0.5  # 999 of 1,000 tokens cached: 62 blocks of 16 hit
    text = await (await sim.client.get("/metrics")).text()
    assert 'vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 2000.0' in text
    assert 'vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 992.0' in text
    assert 'vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0' in text


async def test_serial_prefill_queues_uncached_tokens(make_sim: Make) -> None:
    sim = await make_sim(ttftMs=0, tpotMs=1, prefillUsPerToken=1000, prefillSerial=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Two different 200-token prompts at once: the second prefill waits for the first.
    results = await asyncio.gather(
        sim.complete("a" * 800, max_tokens=1), sim.complete("b" * 800, max_tokens=1)
    )
    assert all(status == 200 for status, _ in results)
    assert loop.time() - started >= 0.39


async def test_error_rate(make_sim: Make) -> None:
    sim = await make_sim(errorRate=1.0)
    status, body = await sim.complete()
    assert status == 500
    assert body["error"]["type"] == "InternalServerError"
    sim.engine.set_faults(EngineFaults())
    assert (await sim.complete())[0] == 200


async def test_hang_stops_tokens_until_released(make_sim: Make) -> None:
    sim = await make_sim(tpotMs=5)
    sim.engine.set_faults(EngineFaults(hang=True))
    stream = asyncio.create_task(sim.stream_events(max_tokens=5))
    await until(lambda: sim.engine.running == 1)
    # Proving that nothing happens needs some time to pass: 20 token times.
    await asyncio.sleep(0.1)
    assert not stream.done()
    assert sim.engine.busy_seconds() == 0  # a hung GPU does no work
    sim.engine.set_faults(EngineFaults())
    events = await asyncio.wait_for(stream, DEADLINE_S)
    assert len(events) == 6  # five tokens and [DONE]


async def test_crash_after_requests(make_sim: Make) -> None:
    sim = await make_sim(crashAfterRequests=2, tpotMs=50)
    slow = asyncio.create_task(sim.complete(max_tokens=50))
    await until(lambda: sim.engine.running == 1)
    assert (await sim.complete(max_tokens=1))[0] == 200
    assert (await sim.complete(max_tokens=1))[0] == 200  # the second: the engine dies after it
    status, body = await slow
    assert status == 500
    assert body["error"]["message"].startswith("EngineCore encountered an issue")
    assert sim.crashes == ["simulated crash (fault injection)"]
    assert (await sim.complete())[0] == 500


async def test_gpu_fault_after_requests(make_sim: Make) -> None:
    sim = await make_sim(gpuFaultAfterRequests=2)
    await sim.complete()
    assert sim.xids == []
    await sim.complete()
    await until(lambda: sim.xids == [79])


async def test_abort_like_vllm_on_sigterm(make_sim: Make) -> None:
    sim = await make_sim(tpotMs=20)
    stream = asyncio.create_task(sim.stream_events(max_tokens=200))
    plain = asyncio.create_task(sim.complete(max_tokens=200))
    await until(lambda: sim.engine.running == 2)
    sim.engine.stopping = True
    sim.engine.abort_all("abort")
    events = await asyncio.wait_for(stream, DEADLINE_S)
    assert events[-1] == b"data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "abort"
    status, body = await plain
    assert status == 500
    assert body["error"]["code"] == 500
    assert sim.engine.metrics.finished["abort"] == 2


async def test_client_disconnect_frees_the_slot(make_sim: Make) -> None:
    sim = await make_sim(tpotMs=10)
    url = str(sim.client.make_url("/v1/completions"))
    async with ClientSession() as session:
        payload = {"prompt": "hi", "max_tokens": 500, "stream": True}
        async with session.post(url, json=payload) as response:
            await response.content.readline()
    await until(lambda: sim.engine.running == 0)


async def test_kv_cache_capacity_limits_admission(make_sim: Make) -> None:
    # 8 blocks of 16 tokens; each request needs 6 (80-token prompt + 16 output tokens)
    # and the prompts differ: one runs at a time although there are 8 slots.
    sim = await make_sim(max_model_len=512, tpotMs=20, maxNumSeqs=8, kvCacheBlocks=8)
    prompts = [f"{i}" * 320 for i in range(3)]
    requests = [asyncio.create_task(sim.complete(p, max_tokens=16)) for p in prompts]
    await until(lambda: sim.engine.running == 1 and sim.engine.waiting == 2)
    assert sim.engine.kv_usage() == pytest.approx(6 / 8)
    text = await (await sim.client.get("/metrics")).text()
    assert 'vllm:num_requests_waiting{engine="0",model_name="tiny"} 2.0' in text
    assert all(status == 200 for status, _ in await asyncio.gather(*requests))
    # The same prompt three times shares its 5 prompt blocks: all three run at once.
    same = [asyncio.create_task(sim.complete(prompts[0] + "x", max_tokens=8))
            for _ in range(3)]
    await until(lambda: sim.engine.running == 3)
    assert sim.engine.waiting == 0
    assert all(status == 200 for status, _ in await asyncio.gather(*same))
    assert (sim.engine.running, sim.engine.waiting, sim.engine.cache.used_blocks) == (0, 0, 0)
