"""Drain on SIGTERM: not ready at once, in-flight requests finish, then the engine stops."""

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from worker_process import Worker, http, listening, wait_for


def engine_running(worker: Worker, count: int) -> bool:
    _, raw = http(worker.url + "/metrics")
    return f'vllm:num_requests_running{{engine="0",model_name="tiny"}} {count:.1f}'.encode() in raw


def last_chunk(raw: bytes) -> dict[str, Any]:
    events = raw.split(b"\n\n")
    assert events[-2] == b"data: [DONE]"
    return dict(json.loads(events[-3][6:]))


@pytest.mark.parametrize(
    "to_group",
    [
        False,  # Kubernetes: SIGTERM to the container's PID 1, the agent
        True,  # the local runtime and a terminal: the whole process group
    ],
)
def test_sigterm_drains_in_flight_requests(start_worker: Any, to_group: bool) -> None:
    worker = start_worker(simulator={"ttftMs": 1, "tpotMs": 20}, args=("--drain-seconds", "20"))
    worker.wait_ready()
    url = worker.url + "/v1/completions"
    with ThreadPoolExecutor(6) as pool:
        streams = [
            pool.submit(http, url, {"prompt": f"s{i}", "max_tokens": 60, "stream": True})
            for i in range(3)
        ]
        plain = [pool.submit(http, url, {"prompt": f"p{i}", "max_tokens": 60}) for i in range(3)]
        wait_for(lambda: engine_running(worker, 6), 10, "six requests to run")
        started = time.monotonic()
        if to_group:
            os.killpg(worker.process.pid, signal.SIGTERM)
        else:
            worker.process.send_signal(signal.SIGTERM)
        # Not ready at once: routers and the kubelet stop sending new requests.
        wait_for(lambda: worker.ready()[0] == 503, 1, "/ready to answer 503")
        assert worker.ready()[1]["reason"] == "draining"
        for future in streams:
            status, raw = future.result(20)
            assert status == 200
            assert last_chunk(raw)["choices"][0]["finish_reason"] == "length"
            assert raw.count(b'"text":') == 60
        for future in plain:
            status, raw = future.result(20)
            assert status == 200
            assert json.loads(raw)["usage"]["completion_tokens"] == 60
    assert worker.wait_exit(20) == 0
    assert time.monotonic() - started < 10
    assert not listening(worker.port)  # new requests are refused once the engine is gone
    assert worker.termination_message() is None


def test_drain_gives_up_after_drain_seconds(start_worker: Any) -> None:
    worker = start_worker(simulator={"ttftMs": 1, "tpotMs": 50}, args=("--drain-seconds", "0.5"))
    worker.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(
            http, worker.url + "/v1/completions", {"prompt": "x", "max_tokens": 400, "stream": True}
        )
        wait_for(lambda: engine_running(worker, 1), 10, "the request to run")
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait_exit(15) == 0
        status, raw = stream.result(10)
    assert time.monotonic() - started < 10  # the request alone needed 20 s
    assert status == 200
    # Past the grace period the engine gets SIGTERM and aborts, like vLLM.
    assert last_chunk(raw)["choices"][0]["finish_reason"] == "abort"
    assert re.fullmatch(
        r"drain timed out after 0\.[5-9] s \(--drain-seconds 0\.5\) with 1 request in the engine",
        worker.termination_message() or "",
    ), worker.termination_message()


def test_second_signal_cuts_the_drain_short(start_worker: Any) -> None:
    worker = start_worker(simulator={"ttftMs": 1, "tpotMs": 50}, args=("--drain-seconds", "30"))
    worker.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(
            http, worker.url + "/v1/completions", {"prompt": "x", "max_tokens": 400, "stream": True}
        )
        wait_for(lambda: engine_running(worker, 1), 10, "the request to run")
        worker.process.send_signal(signal.SIGTERM)
        wait_for(lambda: worker.ready()[1]["phase"] == "draining", 5, "the drain to start")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait_exit(15) == 0
        stream.result(10)
    # Not "timed out after 30 s": the second signal ended it, well before.
    message = worker.termination_message() or ""
    assert re.fullmatch(
        r"drain cut short by a second signal after [0-2]\.\d s with 1 request in the engine",
        message,
    ), message


def test_sigterm_while_loading(start_worker: Any) -> None:
    worker = start_worker(simulator={"loadSeconds": 600})

    def loading() -> bool:
        try:
            return worker.ready()[1]["phase"] == "loading"
        except OSError:
            return False

    wait_for(loading, 20, "the worker to load")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait_exit(15) == 0
    message = worker.termination_message()
    assert message is not None
    assert message.startswith("stopped while loading the model, after")
