"""The simulated engine answers like real vLLM 0.32, request for request.

The same requests (the recorder's table, REQUESTS) go to a live vLLM with
the tiny model and to a live simulated engine; the answers are compared
by shape (shapes.py): JSON keys, order and value types; SSE framing and
chunk shapes by kind; error status and the error's type, param and code;
/v1/models, /health, /version; the `vllm:` metric families kubeinfer
reads. test_shapes.py shows each comparison failing on a wrong shape.
"""

import json
from pathlib import Path

import pytest
import shapes
from kubeinfer.localcluster.realvllm import rawhttp
from kubeinfer.localcluster.realvllm.record import REQUESTS, Exchange, send
from kubeinfer.localcluster.realvllm.server import VllmServer

REPO = Path(__file__).parents[2]
# Who reads vLLM's metrics: the router (balancing, health) and the worker
# agent (drain). The simulator's own metrics are not a reader.
READERS = sorted(
    p for p in [*REPO.glob("router/*.py"), *REPO.glob("worker-image/agent/*.py")]
)
# vLLM families the simulator does not export; none is read by kubeinfer
# (checked below). Listed so that a newly lost family fails the test.
KNOWN_MISSING = frozenset(
    {
        "vllm:cache_config_info",
        "vllm:estimated_flops_per_gpu",
        "vllm:estimated_read_bytes_per_gpu",
        "vllm:estimated_write_bytes_per_gpu",
        "vllm:external_prefix_cache_hits",
        "vllm:external_prefix_cache_queries",
        "vllm:iteration_tokens_total",
        "vllm:mm_cache_hits",
        "vllm:mm_cache_queries",
        "vllm:prompt_tokens_by_source",
        "vllm:prompt_tokens_cached",
        "vllm:prompt_tokens_cached_by_source",
        "vllm:request_max_num_generation_tokens",
        "vllm:request_num_preemptions",
        "vllm:request_prefill_kv_computed_tokens",
        "vllm:admission_rejections",
    }
)


def both(vllm: VllmServer, engine: tuple[str, int], exchange: Exchange) -> tuple[
    rawhttp.RawResponse, rawhttp.RawResponse
]:  # fmt: skip
    real = send(vllm, exchange)
    host, port = engine
    ours = rawhttp.request(host, port, exchange.method, exchange.path, exchange.body,
                           raw=exchange.raw, timeout_s=60)  # fmt: skip
    assert real.ending == ours.ending == "complete", (real.ending, ours.ending)
    return real, ours


def of_kind(kind: str) -> list[Exchange]:
    """The exchanges whose recording is a JSON body, a stream, an error or /health."""
    kinds = {"json": lambda f: f.endswith(".json"), "sse": lambda f: f.endswith(".sse"),
             "error": lambda f: f.startswith("err_"), "health": lambda f: f == "health.txt"}
    chosen = [e for e in REQUESTS if kinds[kind](e.file)]
    assert chosen, kind
    return chosen


def ids(exchanges: list[Exchange]) -> list[str]:
    return [e.file for e in exchanges]


@pytest.mark.parametrize("exchange", of_kind("json"), ids=ids(of_kind("json")))
def test_json_body(
    shared_vllm: VllmServer, simulated_engine: tuple[str, int], exchange: Exchange
) -> None:
    real, ours = both(shared_vllm, simulated_engine, exchange)
    assert (ours.status, real.status) == (200, 200)
    assert shapes.json_diff(real.json(), ours.json()) == []
    assert ours.header("content-type") == real.header("content-type")


@pytest.mark.parametrize("exchange", of_kind("sse"), ids=ids(of_kind("sse")))
def test_stream(
    shared_vllm: VllmServer, simulated_engine: tuple[str, int], exchange: Exchange
) -> None:
    real, ours = both(shared_vllm, simulated_engine, exchange)
    assert (ours.status, real.status) == (200, 200)
    chat = "chat" in exchange.path
    assert shapes.sse_framing(real.body, chat=chat, include_usage=True) == []
    assert shapes.sse_framing(ours.body, chat=chat, include_usage=True) == []
    assert shapes.stream_diff(real.body, ours.body, chat=chat) == []
    assert ours.header("content-type") == real.header("content-type")


@pytest.mark.parametrize("exchange", of_kind("error"), ids=ids(of_kind("error")))
def test_error(
    shared_vllm: VllmServer, simulated_engine: tuple[str, int], exchange: Exchange
) -> None:
    real, ours = both(shared_vllm, simulated_engine, exchange)
    assert real.status >= 400
    assert shapes.error_diff((real.status, real.json()), (ours.status, ours.json())) == []
    assert ours.header("content-type") == real.header("content-type")


def test_health(shared_vllm: VllmServer, simulated_engine: tuple[str, int]) -> None:
    (exchange,) = of_kind("health")
    real, ours = both(shared_vllm, simulated_engine, exchange)
    assert (ours.status, ours.body) == (real.status, real.body) == (200, b"")


def test_models_and_version_values(
    shared_vllm: VllmServer, simulated_engine: tuple[str, int]
) -> None:
    """What a router reads from /v1/models and /version is equal, not just alike."""
    real, ours = both(shared_vllm, simulated_engine, Exchange("-", "GET", "/version"))
    assert ours.json() == real.json()
    real, ours = both(shared_vllm, simulated_engine, Exchange("-", "GET", "/v1/models"))
    (model,) = real.json()["data"]
    (mine,) = ours.json()["data"]
    assert (mine["id"], mine["max_model_len"], mine["owned_by"]) == (
        model["id"], model["max_model_len"], model["owned_by"])  # fmt: skip


def test_metrics(shared_vllm: VllmServer, simulated_engine: tuple[str, int]) -> None:
    # After test_same_shape both have served requests; run alone, the
    # families exist anyway (vLLM and the simulator export them at zero).
    real, ours = both(shared_vllm, simulated_engine, Exchange("-", "GET", "/metrics"))
    theirs = shapes.metric_families(real.body.decode())
    mine = shapes.metric_families(ours.body.decode())
    needed = shapes.metrics_read_by(READERS)
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= needed
    assert shapes.metrics_diff(theirs, mine, needed) == []
    # prometheus_client shows a counter's or histogram's `_created` samples
    # as a gauge family of their own: those go with their family.
    missing = {name.removesuffix("_created") for name in theirs.keys() - mine.keys()}
    assert missing == KNOWN_MISSING, f"lacks {sorted(missing)}"
    assert not missing & needed
    assert ours.header("content-type") == real.header("content-type")


def test_recording_is_current(shared_vllm: VllmServer) -> None:
    """The fixtures' JSON bodies have the shape live vLLM has (else: re-record)."""
    fixtures = REPO / "tests" / "fixtures" / "vllm-0.32.0"
    for exchange in of_kind("json"):
        live = send(shared_vllm, exchange).json()
        recorded = json.loads((fixtures / exchange.file).read_text())
        assert shapes.json_diff(live, recorded) == [], exchange.file
