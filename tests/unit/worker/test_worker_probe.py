"""Reading vLLM's load gauges from /metrics (what the drain waits on)."""

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubeinfer.worker.probe import EngineLoad, EngineProbe, Health, parse_engine_load

FIXTURES = Path(__file__).parents[2] / "fixtures" / "vllm-0.32.0"


def test_recorded_vllm_metrics() -> None:
    # Recorded when idle, after the recorder's four generation requests.
    load = parse_engine_load((FIXTURES / "metrics.txt").read_bytes())
    assert (load.running, load.waiting) == (0, 0)
    assert load.finished == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            b'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
            b'vllm:num_requests_waiting_by_reason{model_name="m",reason="capacity"} 9.0\n'
            b'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 4.0\n'
            b'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1.0\n',
            EngineLoad(running=3, waiting=2, finished=5),
        ),
        # Two engines (data parallel) add up; a bare name without labels counts too.
        (
            b'vllm:num_requests_running{engine="0"} 1.0\n'
            b'vllm:num_requests_running{engine="1"} 2.0\n'
            b"vllm:num_requests_waiting 4\n",
            EngineLoad(running=3, waiting=4, finished=0),
        ),
        (b"# HELP nothing\n", EngineLoad(0, 0, 0)),
    ],
)
def test_parse(text: bytes, expected: EngineLoad) -> None:
    assert parse_engine_load(text) == expected


class TestHealth:
    """/health as the agent sees it, against real in-process servers."""

    async def probe(self, server: Any, **kwargs: Any) -> Health:
        async with aiohttp.ClientSession() as session:
            return await EngineProbe(session, server.host, server.port).health(**kwargs)

    @pytest.mark.parametrize(("status", "expected"), [(200, Health.OK), (503, Health.FAILED)])
    async def test_status(self, aiohttp_raw_server: Any, status: int, expected: Health) -> None:
        async def handler(request: web.BaseRequest) -> web.Response:
            return web.Response(status=status)

        assert await self.probe(await aiohttp_raw_server(handler)) is expected

    async def test_slow_answer_is_a_failure_not_a_refusal(self, aiohttp_raw_server: Any) -> None:
        async def handler(request: web.BaseRequest) -> web.Response:
            await asyncio.sleep(1)
            return web.Response()

        server = await aiohttp_raw_server(handler)
        assert await self.probe(server, timeout_s=0.05) is Health.FAILED

    async def test_nothing_listening(self, unused_tcp_port: int) -> None:
        async with aiohttp.ClientSession() as session:
            probe = EngineProbe(session, "127.0.0.1", unused_tcp_port)
            assert await probe.health() is Health.REFUSED
