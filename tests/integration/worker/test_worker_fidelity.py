"""The simulated engine says what vLLM 0.32 says (tests/fixtures/vllm-0.32.0).

Same keys, value types and key order in bodies and stream chunks; the same
SSE framing, usage chunk, error bodies and status codes; the same `vllm:`
metric names, types, labels and buckets; no listener while loading; 500
after engine death; no drain on SIGTERM.
"""

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from worker_process import (
    FIXTURES,
    HOST,
    REPO,
    TINY_MODEL,
    Worker,
    free_port,
    http,
    listening,
    wait_for,
)


def shape(value: Any) -> Any:
    """Keys (in order) and value types, recursively; lists by their first item."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_http(name: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a recorded raw HTTP response."""
    head, _, body = (FIXTURES / name).read_text().partition("\n\n")
    return int(head.split()[1]), json.loads(body)


def sse_events(raw: bytes) -> list[Any]:
    """The events of an SSE body; asserts vLLM's framing."""
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert all(event.startswith(b"data: ") for event in events[:-1])
    return [json.loads(event[6:]) for event in events[:-2]]


def post(worker: Worker, path: str, body: Any) -> tuple[int, bytes]:
    return http(worker.url + path, body)


class TestBodies:
    def test_completion(self, shared_worker: Worker) -> None:
        status, raw = post(
            shared_worker, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 8}
        )
        assert status == 200
        assert shape(json.loads(raw)) == shape(fixture_json("completion.json"))

    def test_chat(self, shared_worker: Worker) -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        status, raw = post(shared_worker, "/v1/chat/completions", body)
        assert status == 200
        assert shape(json.loads(raw)) == shape(fixture_json("chat.json"))

    def test_models(self, shared_worker: Worker) -> None:
        status, raw = http(shared_worker.url + "/v1/models")
        assert status == 200
        models = json.loads(raw)
        assert shape(models) == shape(fixture_json("models.json"))
        assert models["data"][0]["max_model_len"] == 512

    def test_health_and_version(self, shared_worker: Worker) -> None:
        assert http(shared_worker.url + "/health") == (200, b"")
        status, raw = http(shared_worker.url + "/version")
        assert (status, json.loads(raw)) == (200, fixture_json("version.json"))


class TestStreams:
    def test_completion_stream(self, shared_worker: Worker) -> None:
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        status, raw = post(shared_worker, "/v1/completions", body)
        assert status == 200
        ours = sse_events(raw)
        theirs = sse_events((FIXTURES / "completion_stream.sse").read_bytes())
        assert len(ours) == len(theirs)  # 5 token chunks and the usage chunk
        for mine, recorded in zip(ours, theirs, strict=True):
            assert shape(mine) == shape(recorded)
        assert ours[-1]["choices"] == []
        assert ours[-1]["usage"]["completion_tokens"] == 5

    def test_chat_stream(self, shared_worker: Worker) -> None:
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        status, raw = post(shared_worker, "/v1/chat/completions", body)
        assert status == 200
        ours = sse_events(raw)
        theirs = sse_events((FIXTURES / "chat_stream.sse").read_bytes())
        # The role chunk, five content chunks (the last with finish_reason), usage.
        assert len(ours) == len(theirs) == 7
        for mine, recorded in zip(ours, theirs, strict=True):
            assert shape(mine) == shape(recorded)


class TestErrors:
    @pytest.mark.parametrize(
        ("fixture", "path", "body"),
        [
            ("err_missing_messages.txt", "/v1/chat/completions", {"model": "tiny"}),
            ("err_too_long.txt", "/v1/completions",
             {"model": "tiny", "prompt": "x", "max_tokens": 100000}),
            ("err_unknown_model.txt", "/v1/completions", {"model": "nope", "prompt": "x"}),
        ],
    )  # fmt: skip
    def test_same_body(self, shared_worker: Worker, fixture: str, path: str, body: Any) -> None:
        status, raw = post(shared_worker, path, body)
        assert (status, json.loads(raw)) == fixture_http(fixture)

    def test_bad_json(self, shared_worker: Worker) -> None:
        status, raw = http(
            shared_worker.url + "/v1/completions", raw=b'{"model":"tiny","prompt":"x",'
        )
        expected_status, expected = fixture_http("err_bad_json.txt")
        body = json.loads(raw)
        assert status == expected_status == 400
        assert shape(body) == shape(expected)
        assert body["error"]["type"] == expected["error"]["type"] == "Bad Request"
        assert body["error"]["param"] == expected["error"]["param"] == "body.29"
        assert body["error"]["message"].startswith("1 validation error:\n  {'type': 'json_invalid'")


def metric_families(text: str) -> dict[str, tuple[str, frozenset[str], tuple[str, ...]]]:
    """name -> (type, label names without `le`, bucket bounds) for `vllm:` families."""
    out = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("vllm:"):
            continue
        labels: set[str] = set()
        bounds: list[str] = []
        for sample in family.samples:
            labels.update(k for k in sample.labels if k != "le")
            if sample.name.endswith("_bucket"):
                bound = sample.labels["le"]
                if bound not in bounds:
                    bounds.append(bound)
        out[family.name] = (family.type, frozenset(labels), tuple(bounds))
    return out


def test_metrics(shared_worker: Worker) -> None:
    status, raw = http(shared_worker.url + "/metrics")
    assert status == 200
    ours = metric_families(raw.decode())
    theirs = metric_families((FIXTURES / "metrics.txt").read_text())
    assert ours.keys() <= theirs.keys(), f"not vLLM 0.32 metrics: {ours.keys() - theirs.keys()}"
    # Types, labels and buckets; the token-count histograms' buckets scale
    # with max_model_len, which is 512 in both, so they are compared too.
    assert {name: ours[name] for name in ours} == {name: theirs[name] for name in ours}
    # What the router, the drain and the dashboards read.
    required = {
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
        "vllm:request_time_per_output_token_seconds", "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds", "vllm:request_success", "vllm:prompt_tokens",
        "vllm:generation_tokens",
    }  # fmt: skip
    assert required <= ours.keys()
    assert ours["vllm:request_prompt_tokens"][2] == theirs["vllm:request_prompt_tokens"][2]


def test_nothing_listens_while_loading(start_worker: Any) -> None:
    # Long enough that the agent (up in about a second) certainly sees the load.
    worker = start_worker(simulator={"loadSeconds": 8, "ttftMs": 1, "tpotMs": 1})

    def agent_up() -> bool:
        try:
            worker.ready()
        except OSError:
            return False
        return True

    wait_for(agent_up, 6, "the agent to answer")
    status, body = worker.ready()
    assert (status, body["phase"], body["reason"]) == (503, "loading", "loading the model")
    assert not listening(worker.port)
    worker.wait_ready()
    assert listening(worker.port)


def test_500_after_engine_death(start_worker: Any) -> None:
    worker = start_worker(simulator={"ttftMs": 1, "tpotMs": 50, "crashAfterRequests": 2})
    worker.wait_ready()
    completions = worker.url + "/v1/completions"
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(http, completions, {"prompt": "slow", "max_tokens": 200})
        stream = pool.submit(
            http, completions, {"prompt": "stream", "max_tokens": 200, "stream": True}
        )

        def running() -> bool:
            _, raw = http(worker.url + "/metrics")
            return b'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0' in raw

        wait_for(running, 10, "the slow requests to run")
        assert http(completions, {"prompt": "a", "max_tokens": 1})[0] == 200
        assert http(completions, {"prompt": "b", "max_tokens": 1})[0] == 200  # the engine dies
        status, raw = slow.result(10)
        stream_status, stream_raw = stream.result(10)
    assert (status, json.loads(raw)) == (500, fixture_json("engine_dead_completion_500.json"))
    # The stream: a 200 whose last events are vLLM's error event (byte for
    # byte: json.dumps spacing) and [DONE], with no finish_reason anywhere.
    recorded = fixture_json("engine_death.json")["stream"]
    assert stream_status == recorded["status"] == 200
    events = stream_raw.split(b"\n\n")
    assert events[-3:] == [
        f"data: {recorded['last_events'][-2]}".encode(), b"data: [DONE]", b""
    ]
    assert b'"finish_reason":"' not in stream_raw
    assert recorded["finish_reasons"] == []
    assert worker.wait_exit(10) == 5
    assert worker.termination_message() == (
        "engine core died while serving: EngineDeadError: simulated crash (fault injection)"
    )


def test_engine_alone_does_not_drain_on_sigterm(tmp_path: Path) -> None:
    """Like vLLM: SIGTERM closes the listener and aborts running requests."""
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-P", "-m", "kubeinfer.worker.simulated",
         "--model-spec", json.dumps(TINY_MODEL), "--simulator-spec", '{"ttftMs": 1, "tpotMs": 20}',
         "--host", HOST, "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: listening(port), 20, "the engine to listen")
        url = f"http://{HOST}:{port}/v1/completions"
        with ThreadPoolExecutor(2) as pool:
            stream = pool.submit(http, url, {"prompt": "s", "max_tokens": 400, "stream": True})
            plain = pool.submit(http, url, {"prompt": "p", "max_tokens": 400})

            def both_running() -> bool:
                _, raw = http(f"http://{HOST}:{port}/metrics")
                return b'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0' in raw

            wait_for(both_running, 10, "both requests to run")
            started = time.monotonic()
            engine.send_signal(signal.SIGTERM)
            stream_status, stream_raw = stream.result(10)
            assert stream_status == 200
            plain_status, plain_raw = plain.result(10)
        assert time.monotonic() - started < 5  # nowhere near the 8 s the requests needed
        chunks = sse_events(stream_raw)
        assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
        assert len(chunks) < 400
        assert (plain_status, json.loads(plain_raw)) == (
            500, fixture_json("engine_dead_completion_500.json")
        )  # fmt: skip
        assert engine.wait(10) == 0
        assert not listening(port)
    finally:
        engine.kill()
        engine.wait()
