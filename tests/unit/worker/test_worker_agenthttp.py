"""The agent's endpoints in-process (the full life is in tests/integration/worker)."""

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from kubeinfer.worker.agent import Agent, Phase, WatchedGpu
from kubeinfer.worker.agenthttp import agent_app
from kubeinfer.worker.config import parse_worker_args
from kubeinfer.worker.nvml import DeviceSelector, Gpu
from kubeinfer.worker.simnvml import SimulatedNvml
from prometheus_client.parser import text_string_to_metric_families

MODEL = '{"name": "m", "source": "org/m"}'
Client = TestClient[Any, Any]


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Callable[[str], Awaitable[tuple[Agent, Client]]]:
    async def make(engine: str) -> tuple[Agent, Client]:
        config = parse_worker_args(["--engine", engine, "--model-spec", MODEL], {})
        simulated = SimulatedNvml.one_gpu()
        gpu = Gpu.open(simulated, DeviceSelector())
        watched = WatchedGpu(gpu, gpu.snapshot(time.time()), simulated)
        agent = Agent(config, watched, ["engine"], {})
        return agent, await aiohttp_client(agent_app(agent))

    return make


async def test_ready_follows_the_phase(make_client: Any) -> None:
    agent, client = await make_client("simulated")
    response = await client.get("/ready")
    assert response.status == 503
    assert await response.json() == {"ready": False, "phase": "starting", "reason": "starting"}
    agent.phase, agent.engine_healthy = Phase.SERVING, True
    assert (await client.get("/ready")).status == 200
    agent.gpu_fault = "GPU lost: Xid 79 (GPU has fallen off the bus)"
    response = await client.get("/ready")
    assert response.status == 503
    assert (await response.json())["reason"] == agent.gpu_fault
    assert (await client.get("/live")).status == 200


async def test_gpu_and_metrics(make_client: Any) -> None:
    agent, client = await make_client("simulated")
    agent.xid_counts[13] += 1
    gpu = await (await client.get("/gpu")).json()
    assert gpu["name"] == "NVIDIA H100 80GB HBM3 (simulated)"
    assert gpu["memoryTotalBytes"] == 80 * 1024**3
    assert gpu["xidEvents"] == {"13": 1}
    text = await (await client.get("/metrics")).text()
    for name in (
        "kubeinfer_worker_ready 0.0",
        'kubeinfer_worker_phase{phase="starting"} 1.0',
        "kubeinfer_gpu_memory_total_bytes{",
        "kubeinfer_gpu_temperature_celsius{",
        "kubeinfer_gpu_power_watts{",
        'kubeinfer_gpu_ecc_errors_total{gpu="',
        'xid="13"} 1.0',
    ):
        assert name in text


async def test_faults_only_for_the_simulated_engine(make_client: Any) -> None:
    _, vllm = await make_client("vllm")
    assert (await vllm.get("/admin/faults")).status == 404
    assert (await vllm.post("/admin/faults", json={"errorRate": 1})).status == 404
    agent, simulated = await make_client("simulated")
    response = await simulated.post("/admin/faults", json={"errorRate": 0.5, "hang": True})
    assert response.status == 200
    assert (await response.json())["errorRate"] == 0.5
    assert agent.engine_faults.hang is True


@pytest.fixture
def make_cpu_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Callable[[], Awaitable[tuple[Agent, Client]]]:
    async def make() -> tuple[Agent, Client]:
        argv = ["--engine", "vllm", "--model-spec", MODEL, "--device", "cpu"]
        agent = Agent(parse_worker_args(argv, {}), None, ["engine"], {})
        return agent, await aiohttp_client(agent_app(agent))

    return make


async def test_without_a_gpu_nothing_gpu_shaped_is_reported(make_cpu_client: Any) -> None:
    _, client = await make_cpu_client()
    response = await client.get("/gpu")
    assert response.status == 404
    assert "no GPU" in (await response.json())["error"]["message"]
    text = await (await client.get("/metrics")).text()
    assert "kubeinfer_worker_ready 0.0" in text
    assert 'kubeinfer_worker_phase{phase="starting"} 1.0' in text
    assert "kubeinfer_gpu" not in text


async def test_readiness_without_a_gpu_follows_the_engine(make_cpu_client: Any) -> None:
    agent, client = await make_cpu_client()
    assert (await client.get("/ready")).status == 503
    agent.phase, agent.engine_healthy = Phase.SERVING, True
    assert (await client.get("/ready")).status == 200
    assert "kubeinfer_worker_ready 1.0" in await (await client.get("/metrics")).text()


VLLM_PAGE = (
    Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32.0" / "metrics.txt"
).read_bytes()


async def test_metrics_carry_the_engines_page(
    aiohttp_client: Callable[..., Awaitable[Client]], unused_tcp_port: int
) -> None:
    """One scrape of the agent gives the agent's series and the engine's (real
    vLLM's recorded page, served by a stand-in engine on loopback)."""
    port = unused_tcp_port
    engine = web.Application()

    async def page(_: web.Request) -> web.Response:
        return web.Response(body=VLLM_PAGE, content_type="text/plain")

    engine.router.add_get("/metrics", page)
    runner = web.AppRunner(engine)
    await runner.setup()
    config = parse_worker_args(
        ["--engine", "vllm", "--model-spec", MODEL, "--host", "127.0.0.1", "--port", str(port)], {}
    )
    agent = Agent(config, None, ["engine"], {})
    client = await aiohttp_client(agent_app(agent))
    # The engine is not up yet: the agent's series alone, and it says so.
    text = await (await client.get("/metrics")).text()
    assert "kubeinfer_worker_engine_metrics_up 0" in text
    assert "vllm:" not in text
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        text = await (await client.get("/metrics")).text()
    finally:
        await runner.cleanup()
    assert "kubeinfer_worker_engine_metrics_up 1" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "kubeinfer_worker_ready" in families
    assert "vllm:kv_cache_usage_perc" in families
    assert "vllm:generation_tokens" in families
    # No family appears twice (the text parser would have merged or failed).
    names = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names))
