"""Reading vLLM's load gauges from /metrics (what the drain waits on)."""

from pathlib import Path

import pytest
from kubeinfer.worker.probe import EngineLoad, parse_engine_load

FIXTURES = Path(__file__).parents[2] / "fixtures" / "vllm-0.32.0"


def test_recorded_vllm_metrics() -> None:
    # Recorded when idle after ~130 requests.
    load = parse_engine_load((FIXTURES / "metrics.txt").read_bytes())
    assert (load.running, load.waiting) == (0, 0)
    assert load.finished > 100


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
