"""Counters and sliding-window statistics, kept as plain numbers.

Everything the router measures lives here as ints and small dicts, not as
prometheus_client objects: recording a request costs a few dict updates,
and a *snapshot* (plain JSON) can be taken from every router process and
summed (`merge_snapshots`). Both ``/metrics`` and ``/debug/backends`` are
rendered from a snapshot, so with ``--processes N`` they show the whole
pod, not whichever process answered.

Latencies go into log-scale buckets (5 % wide), which merge by addition
and give p50/p99 within a few percent: plenty for canary analysis, which
compares a canary with the stable revision.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from kubeinfer.operator.api.debugbackends import (
    BackendStats,
    DebugBackends,
    Demand,
    GpuReport,
    QueueStats,
    RevisionStats,
    StatsWindow,
    worst,
)

# Sliding-window histogram: bucket i holds values in [BASE*G^i, BASE*G^(i+1)) ms.
_BASE_MS = 0.01
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)
_MAX_INDEX = 400  # 0.01 ms * 1.05^400 is about 3 hours

# Prometheus histogram buckets (seconds), per backend.
PROM_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)


def bucket_index(ms: float) -> int:
    if ms <= _BASE_MS:
        return 0
    return min(int(math.log(ms / _BASE_MS) / _LOG_GROWTH), _MAX_INDEX)


def bucket_value(index: int) -> float:
    """The geometric middle of a bucket, in ms."""
    return float(_BASE_MS * _GROWTH ** (index + 0.5))


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a log-bucket histogram, or None when empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return round(bucket_value(index), 3)
    return round(bucket_value(max(hist)), 3)


class Window:
    """Requests, errors and latency/TTFT histograms over the last ``seconds``.

    Time is cut into one-second slots in a ring; a slot is cleared when the
    clock comes round to it again, so recording is O(1) and memory bounded.
    """

    __slots__ = ("_errors", "_latency", "_requests", "_slot_time", "_ttft", "seconds")

    def __init__(self, seconds: int = 60) -> None:
        self.seconds = seconds
        self._slot_time = [-1] * seconds
        self._requests = [0] * seconds
        self._errors = [0] * seconds
        self._latency: list[dict[int, int]] = [{} for _ in range(seconds)]
        self._ttft: list[dict[int, int]] = [{} for _ in range(seconds)]

    def _slot(self, now: float) -> int:
        second = int(now)
        i = second % self.seconds
        if self._slot_time[i] != second:
            self._slot_time[i] = second
            self._requests[i] = 0
            self._errors[i] = 0
            self._latency[i] = {}
            self._ttft[i] = {}
        return i

    def record(self, now: float, error: bool, latency_s: float | None,
               ttft_s: float | None) -> None:
        i = self._slot(now)
        self._requests[i] += 1
        if error:
            self._errors[i] += 1
        if latency_s is not None:
            h = self._latency[i]
            b = bucket_index(latency_s * 1000.0)
            h[b] = h.get(b, 0) + 1
        if ttft_s is not None:
            h = self._ttft[i]
            b = bucket_index(ttft_s * 1000.0)
            h[b] = h.get(b, 0) + 1

    def snapshot(self, now: float) -> dict[str, Any]:
        second = int(now)
        oldest = second - self.seconds + 1
        requests = errors = 0
        latency: dict[int, int] = {}
        ttft: dict[int, int] = {}
        for i in range(self.seconds):
            if self._slot_time[i] < oldest:
                continue
            requests += self._requests[i]
            errors += self._errors[i]
            for k, v in self._latency[i].items():
                latency[k] = latency.get(k, 0) + v
            for k, v in self._ttft[i].items():
                ttft[k] = ttft.get(k, 0) + v
        return {"requests": requests, "errors": errors, "latency": latency, "ttft": ttft}


class Histogram:
    """A Prometheus-style cumulative histogram (seconds) as plain numbers."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(PROM_BUCKETS) + 1)  # last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(PROM_BUCKETS, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}


class AttemptStats:
    """Cumulative counters for one backend or one revision."""

    __slots__ = ("by_status", "errors", "latency", "requests", "ttft")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.by_status: dict[str, int] = {}
        self.latency = Histogram()
        self.ttft = Histogram()

    def record(self, status: str, error: bool, latency_s: float | None,
               ttft_s: float | None) -> None:
        self.requests += 1
        if error:
            self.errors += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if latency_s is not None:
            self.latency.observe(latency_s)
        if ttft_s is not None:
            self.ttft.observe(ttft_s)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "byStatus": dict(self.by_status),
            "latency": self.latency.snapshot(),
            "ttft": self.ttft.snapshot(),
        }


def _add_hist(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["counts"] = [a + b for a, b in zip(into["counts"], other["counts"], strict=True)]
    into["sum"] += other["sum"]


def _add_sparse(into: dict[Any, int], other: dict[Any, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several router processes into one.

    Counters and histograms add up; per-backend state is combined so that a
    backend shows as healthy only if every process sees it healthy and as
    ejected if any process ejected it. JSON turns int dict keys into
    strings, so sparse histograms are re-keyed to int here.
    """
    if len(snaps) == 1:
        return snaps[0]
    merged: dict[str, Any] = {
        key: value for key, value in snaps[0].items()
        if key not in ("backends", "revisions", "counters", "queue", "demand")
    }
    backends: dict[str, dict[str, Any]] = {}
    revisions: dict[str, dict[str, Any]] = {}
    counters: dict[str, dict[str, int]] = {}
    queue = {"length": 0, "capacity": 0}
    demand: dict[str, Any] = {"arrivals": 0, "idleSeconds": None}
    for snap in snaps:
        d = snap.get("demand") or {}
        demand["arrivals"] += d.get("arrivals", 0)
        idle = d.get("idleSeconds")
        if idle is not None and (demand["idleSeconds"] is None or idle < demand["idleSeconds"]):
            demand["idleSeconds"] = idle
        merged["generation"] = max(merged.get("generation", 0), snap.get("generation", 0))
        queue["length"] += snap["queue"]["length"]
        queue["capacity"] = max(queue["capacity"], snap["queue"]["capacity"])
        for name, values in snap.get("counters", {}).items():
            _add_sparse(counters.setdefault(name, {}), values)
        for b in snap["backends"]:
            have = backends.get(b["name"])
            if have is None:
                backends[b["name"]] = {**b, "stats": _copy_stats(b["stats"]),
                                       "window": _copy_window(b["window"])}
                continue
            have["healthy"] = have["healthy"] and b["healthy"]
            have["ejected"] = have["ejected"] or b["ejected"]
            have["inFlight"] += b["inFlight"]
            have["prefillPending"] += b["prefillPending"]
            if have["queueDepth"] is None:
                have["queueDepth"] = b["queueDepth"]
            _add_stats(have["stats"], b["stats"])
            _add_window(have["window"], b["window"])
            have["oldestRunningSeconds"] = worst(
                have["oldestRunningSeconds"], b["oldestRunningSeconds"])
            have["gpu"] = have["gpu"] or b["gpu"]
            if have["kvUsage"] is None:
                have["kvUsage"] = b["kvUsage"]
        for rev, r in snap["revisions"].items():
            have = revisions.get(rev)
            if have is None:
                revisions[rev] = {"stats": _copy_stats(r["stats"]),
                                  "window": _copy_window(r["window"])}
                continue
            _add_stats(have["stats"], r["stats"])
            _add_window(have["window"], r["window"])
    merged["backends"] = list(backends.values())
    merged["revisions"] = revisions
    merged["counters"] = counters
    merged["queue"] = queue
    merged["demand"] = demand
    return merged


def _add_window(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["requests"] += other["requests"]
    into["errors"] += other["errors"]
    _add_sparse(into["latency"], _int_keys(other["latency"]))
    _add_sparse(into["ttft"], _int_keys(other["ttft"]))


def _int_keys(d: dict[Any, int]) -> dict[int, int]:
    return {int(k): v for k, v in d.items()}


def _copy_window(w: dict[str, Any]) -> dict[str, Any]:
    return {**w, "latency": _int_keys(w["latency"]), "ttft": _int_keys(w["ttft"])}


def _copy_stats(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": s["requests"],
        "errors": s["errors"],
        "byStatus": dict(s["byStatus"]),
        "latency": {"counts": list(s["latency"]["counts"]), "sum": s["latency"]["sum"]},
        "ttft": {"counts": list(s["ttft"]["counts"]), "sum": s["ttft"]["sum"]},
    }


def _add_stats(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["requests"] += other["requests"]
    into["errors"] += other["errors"]
    _add_sparse(into["byStatus"], other["byStatus"])
    _add_hist(into["latency"], other["latency"])
    _add_hist(into["ttft"], other["ttft"])


def _render_window(w: dict[str, Any], seconds: float) -> StatsWindow:
    latency = _int_keys(w["latency"])
    ttft = _int_keys(w["ttft"])
    return StatsWindow(
        seconds=seconds,
        requests=w["requests"],
        errors=w["errors"],
        error_rate=round(w["errors"] / w["requests"], 6) if w["requests"] else 0.0,
        p50_latency_ms=percentile(latency, 0.5),
        p99_latency_ms=percentile(latency, 0.99),
        p50_ttft_ms=percentile(ttft, 0.5),
        p90_ttft_ms=percentile(ttft, 0.9),
        p99_ttft_ms=percentile(ttft, 0.99),
    )


def render_debug(snap: dict[str, Any]) -> DebugBackends:
    """The ``/debug/backends`` document (read by the operator's canary
    analysis, autoscaler and GPU inventory, and by `kubectl kubeinfer top`)."""
    revisions = {}
    seconds = 0.0
    for rev, r in snap["revisions"].items():
        seconds = r["window"]["seconds"]
        revisions[rev] = RevisionStats(
            requests=r["stats"]["requests"],
            errors=r["stats"]["errors"],
            window=_render_window(r["window"], seconds),
        )
    demand = snap.get("demand") or {}
    return DebugBackends(
        generation=snap["generation"],
        model=snap["model"],
        backends=[
            BackendStats(
                name=b["name"],
                url=b["url"],
                revision=b["revision"],
                healthy=b["healthy"],
                draining=b["draining"],
                ejected=b["ejected"],
                in_flight=b["inFlight"],
                queue_depth=b["queueDepth"],
                requests=b["stats"]["requests"],
                errors=b["stats"]["errors"],
                window=_render_window(b["window"], snap.get("windowSeconds", seconds)),
                oldest_running_seconds=b["oldestRunningSeconds"],
                kv_usage=b["kvUsage"],
                gpu=None if b["gpu"] is None else GpuReport.model_validate(b["gpu"]),
            )
            for b in snap["backends"]
        ],
        revisions=revisions,
        queue=QueueStats(length=snap["queue"]["length"], capacity=snap["queue"]["capacity"]),
        demand=Demand(
            arrivals=demand.get("arrivals", 0), idle_seconds=demand.get("idleSeconds")
        ),
    )
