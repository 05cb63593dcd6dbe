"""Sliding windows, percentiles, merging process snapshots, the /debug/backends
document and the Prometheus text, and vLLM metrics parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubeinfer.router import metrics
from kubeinfer.router.health import parse_vllm_metrics
from kubeinfer.router.pool import Pool
from kubeinfer.router.stats import (
    Window,
    bucket_index,
    bucket_value,
    merge_snapshots,
    percentile,
    render_debug,
)
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32.0"


@pytest.mark.parametrize("ms", [0.05, 0.3, 1.0, 12.5, 250.0, 4000.0, 90_000.0])
def test_bucket_value_is_within_five_percent(ms: float) -> None:
    assert abs(bucket_value(bucket_index(ms)) - ms) / ms < 0.05


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([10.0] * 100, 0.5, 10.0),
        ([1.0] * 99 + [500.0], 0.5, 1.0),
        ([1.0] * 98 + [500.0] * 2, 0.99, 500.0),
        ([float(i) for i in range(1, 101)], 0.5, 50.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    hist: dict[int, int] = {}
    for v in values:
        hist[bucket_index(v)] = hist.get(bucket_index(v), 0) + 1
    got = percentile(hist, q)
    assert got is not None
    assert abs(got - expected) / expected < 0.05


def test_percentile_of_nothing_is_none() -> None:
    assert percentile({}, 0.5) is None


def test_window_forgets_old_seconds() -> None:
    w = Window(seconds=10)
    w.record(100.0, False, 0.010, 0.005)
    w.record(105.5, True, None, None)
    assert w.snapshot(106.0)["requests"] == 2
    snap = w.snapshot(112.0)  # second 100 has left the window
    assert (snap["requests"], snap["errors"]) == (1, 1)
    assert w.snapshot(200.0)["requests"] == 0


def test_window_slot_reuse_clears_old_counts() -> None:
    w = Window(seconds=5)
    w.record(10.2, True, 0.5, 0.5)
    w.record(15.7, False, 0.001, None)  # same slot, five seconds later
    snap = w.snapshot(15.9)
    assert (snap["requests"], snap["errors"]) == (1, 0)
    assert sum(snap["latency"].values()) == 1


def _pool_snapshot(requests: int, errors: int, latency: float) -> dict:
    pool = Pool(clock=lambda: 50.0)
    from kubeinfer.operator.api.routing import RoutingTable

    pool.apply(
        RoutingTable.model_validate(
            {
                "service": "s",
                "model": "m",
                "generation": 4,
                "backends": [{"name": "a", "url": "http://127.0.0.1:1", "revision": "r1"}],
            }
        )
    )
    a = pool.backends["a"]
    for i in range(requests):
        pool.record_attempt(
            a, "503" if i < errors else "200", i < errors, latency, latency / 2, 50.0
        )
    snap = pool.snapshot(50.0, 0.0)
    snap["counters"] = {"responses": {"200": requests - errors}}
    # What crosses the control socket between processes is JSON.
    return json.loads(json.dumps(snap))


def test_merge_adds_counters_and_histograms_of_processes() -> None:
    one = _pool_snapshot(10, 1, 0.010)
    two = _pool_snapshot(30, 3, 0.100)
    two["backends"][0]["healthy"] = False
    merged = merge_snapshots([one, two])
    doc = render_debug(merged).model_dump(mode="json", by_alias=True)
    assert doc["backends"][0]["requests"] == 40
    assert doc["backends"][0]["errors"] == 4
    assert doc["backends"][0]["healthy"] is False  # unhealthy in any process
    rev = doc["revisions"]["r1"]
    assert (rev["requests"], rev["errors"]) == (40, 4)
    assert rev["window"]["errorRate"] == 0.1
    assert rev["window"]["p50LatencyMs"] == pytest.approx(100.0, rel=0.05)
    assert rev["window"]["p99LatencyMs"] == pytest.approx(100.0, rel=0.05)
    assert merged["counters"]["responses"] == {"200": 36}


def test_per_backend_window_running_and_gpu_merge_over_processes() -> None:
    one = _pool_snapshot(10, 0, 0.010)
    two = _pool_snapshot(30, 0, 0.100)
    one["backends"][0]["oldestRunningSeconds"] = 2.5
    two["backends"][0]["oldestRunningSeconds"] = 7.0
    two["backends"][0]["gpu"] = {"uuid": "GPU-1", "memoryUsedBytes": 5}
    doc = render_debug(merge_snapshots([one, two])).model_dump(mode="json", by_alias=True)
    backend = doc["backends"][0]
    assert backend["window"]["requests"] == 40
    assert backend["window"]["p50LatencyMs"] == pytest.approx(100.0, rel=0.05)
    assert backend["window"]["p50TtftMs"] == pytest.approx(50.0, rel=0.05)
    assert backend["oldestRunningSeconds"] == 7.0  # the oldest of all processes
    assert backend["gpu"]["uuid"] == "GPU-1"
    assert backend["gpu"]["memoryUsedBytes"] == 5


def test_oldest_running_attempt_is_measured_from_its_start() -> None:
    pool = Pool(clock=lambda: 50.0)
    from kubeinfer.operator.api.routing import RoutingTable

    pool.apply(
        RoutingTable.model_validate(
            {
                "service": "s",
                "model": "m",
                "backends": [{"name": "a", "url": "http://127.0.0.1:1", "revision": "r1"}],
            }
        )
    )
    assert pool.snapshot(50.0, 0.0)["backends"][0]["oldestRunningSeconds"] is None
    pool.backends["a"].running.update({1: 40.0, 2: 45.0})
    assert pool.snapshot(50.0, 0.0)["backends"][0]["oldestRunningSeconds"] == 10.0


def test_debug_document_has_the_agreed_shape() -> None:
    doc = render_debug(_pool_snapshot(5, 0, 0.020)).model_dump(mode="json", by_alias=True)
    assert set(doc) == {
        "version", "generation", "model", "backends", "revisions", "queue", "demand"
    }  # fmt: skip
    assert doc["version"] == 1
    assert doc["generation"] == 4
    assert doc["model"] == "m"
    assert set(doc["backends"][0]) == {
        "name",
        "url",
        "revision",
        "healthy",
        "draining",
        "ejected",
        "inFlight",
        "queueDepth",
        "requests",
        "errors",
        "window",
        "oldestRunningSeconds",
        "kvUsage",
        "gpu",
    }
    assert set(doc["backends"][0]["window"]) == set(doc["revisions"]["r1"]["window"])
    assert set(doc["revisions"]["r1"]) == {"requests", "errors", "window"}
    assert set(doc["revisions"]["r1"]["window"]) == {
        "seconds",
        "requests",
        "errors",
        "errorRate",
        "p50LatencyMs",
        "p99LatencyMs",
        "p50TtftMs",
        "p90TtftMs",
        "p99TtftMs",
    }
    assert set(doc["queue"]) == {"length", "capacity"}
    assert set(doc["demand"]) == {"arrivals", "idleSeconds"}


def test_merge_sums_arrivals_and_keeps_the_shortest_idle_time() -> None:
    one = _pool_snapshot(10, 1, 0.010)
    two = _pool_snapshot(30, 3, 0.100)
    one["demand"] = {"arrivals": 7, "idleSeconds": 40.0}
    two["demand"] = {"arrivals": 5, "idleSeconds": 2.5}
    doc = render_debug(merge_snapshots([one, two])).model_dump(mode="json", by_alias=True)
    # a request seen by any process 2.5 s ago makes the pod busy
    assert doc["demand"] == {"arrivals": 12, "idleSeconds": 2.5}


def test_prometheus_text_parses_and_has_the_families() -> None:
    snap = _pool_snapshot(6, 2, 0.050)
    snap["counters"]["retries"] = {"connect": 2}
    snap["counters"]["ejections"] = {"a|reset": 1}
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(snap).decode())}
    p = metrics.PREFIX
    for name in (
        "requests",
        "backend_requests",
        "backend_errors",
        "backend_request_duration_seconds",
        "backend_ttft_seconds",
        "in_flight",
        "queue_length",
        "retries",
        "ejections",
        "backend_healthy",
        "revision_request_duration_seconds",
    ):
        assert p + name in families, name
    by_status = {s.labels["status"]: s.value for s in families[p + "backend_requests"].samples}
    assert by_status == {"200": 4, "503": 2}
    counts = [
        s
        for s in families[p + "backend_request_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert counts[0].value == 6


def test_vllm_metrics_fixture_parses() -> None:
    waiting, running, tokens, kv_usage = parse_vllm_metrics(
        (FIXTURES / "metrics.txt").read_text())
    assert waiting == 0
    assert running == 0
    assert tokens == 26.0  # 8 + 5 + 8 + 5 tokens (the recorder sets ignore_eos)
    assert kv_usage == 0.0


def test_vllm_metrics_sum_over_engines() -> None:
    text = (
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 2.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 9.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 4.0\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 1.0\n'
        "vllm:generation_tokens_total 12.0\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5\n'
    )
    assert parse_vllm_metrics(text) == (5, 5, 12.0, 0.5)
    assert parse_vllm_metrics("garbage\n") == (None, None, None, None)
