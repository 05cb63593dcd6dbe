"""Prometheus text exposition rendered from a (merged) stats snapshot.

The router counts in plain numbers (see `stats`) and renders the text
format itself at scrape time; with ``--processes N`` the snapshot is the sum
of all processes, so one scrape of any process shows the whole pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubeinfer.router.stats import PROM_BUCKETS

PREFIX = "kubeinfer_router_"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> str:
        full = PREFIX + name
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        return full

    def sample(self, name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, labels: list[tuple[str, str]], hist: dict[str, Any]) -> None:
        cumulative = 0
        for bound, count in zip(PROM_BUCKETS, hist["counts"], strict=False):
            cumulative += count
            self.sample(f"{name}_bucket", [*labels, ("le", repr(bound))], cumulative)
        cumulative += hist["counts"][-1]
        self.sample(f"{name}_bucket", [*labels, ("le", "+Inf")], cumulative)
        self.sample(f"{name}_sum", labels, hist["sum"])
        self.sample(f"{name}_count", labels, cumulative)


def render(snap: dict[str, Any]) -> bytes:
    out = _Out()
    backends = snap["backends"]
    counters = snap.get("counters", {})

    name = out.family("requests_total", "counter",
                      "Client requests answered, by HTTP status code.")
    for code, n in sorted(counters.get("responses", {}).items()):
        out.sample(name, [("code", code)], n)

    name = out.family("backend_requests_total", "counter",
                      "Attempts sent to a backend, by outcome (HTTP status, or connect/reset/"
                      "stall/timeout/abort).")
    for b in backends:
        for status, n in sorted(b["stats"]["byStatus"].items()):
            out.sample(name, [("backend", b["name"]), ("revision", b["revision"]),
                              ("status", status)], n)

    name = out.family("backend_errors_total", "counter",
                      "Failed attempts (connect errors, timeouts, 5xx, aborted streams, stalls).")
    for b in backends:
        out.sample(name, [("backend", b["name"]), ("revision", b["revision"])],
                   b["stats"]["errors"])

    name = out.family("backend_request_duration_seconds", "histogram",
                      "Attempt duration until the last response byte, per backend.")
    for b in backends:
        out.histogram(name, [("backend", b["name"]), ("revision", b["revision"])],
                      b["stats"]["latency"])

    name = out.family("backend_ttft_seconds", "histogram",
                      "Time to the first response byte (first chunk when streaming).")
    for b in backends:
        out.histogram(name, [("backend", b["name"]), ("revision", b["revision"])],
                      b["stats"]["ttft"])

    name = out.family("revision_requests_total", "counter", "Attempts per revision.")
    for rev, r in sorted(snap["revisions"].items()):
        out.sample(name, [("revision", rev)], r["stats"]["requests"])
    name = out.family("revision_errors_total", "counter", "Failed attempts per revision.")
    for rev, r in sorted(snap["revisions"].items()):
        out.sample(name, [("revision", rev)], r["stats"]["errors"])
    name = out.family("revision_request_duration_seconds", "histogram",
                      "Attempt duration per revision.")
    for rev, r in sorted(snap["revisions"].items()):
        out.histogram(name, [("revision", rev)], r["stats"]["latency"])
    name = out.family("revision_ttft_seconds", "histogram",
                      "Time to the first response byte per revision.")
    for rev, r in sorted(snap["revisions"].items()):
        out.histogram(name, [("revision", rev)], r["stats"]["ttft"])

    name = out.family("in_flight", "gauge", "Attempts in flight per backend.")
    for b in backends:
        out.sample(name, [("backend", b["name"]), ("revision", b["revision"])], b["inFlight"])
    name = out.family("prefill_pending_blocks", "gauge",
                      "Prompt blocks (256 characters) sent to a backend without a first "
                      "byte back yet, as prefix-score estimates them; 0 under other strategies.")
    for b in backends:
        out.sample(name, [("backend", b["name"]), ("revision", b["revision"])],
                   b["prefillPending"])

    name = out.family("backend_healthy", "gauge",
                      "1 when the active health check passes.")
    for b in backends:
        out.sample(name, [("backend", b["name"]), ("revision", b["revision"])], b["healthy"])
    name = out.family("backend_ejected", "gauge",
                      "1 while passive outlier detection keeps the backend out.")
    for b in backends:
        out.sample(name, [("backend", b["name"]), ("revision", b["revision"])], b["ejected"])
    name = out.family("backend_draining", "gauge", "1 when the routing table marks it draining.")
    for b in backends:
        out.sample(name, [("backend", b["name"]), ("revision", b["revision"])], b["draining"])
    name = out.family("backend_queue_depth", "gauge",
                      "vllm:num_requests_waiting last scraped from the backend.")
    for b in backends:
        if b["queueDepth"] is not None:
            out.sample(name, [("backend", b["name"]), ("revision", b["revision"])],
                       b["queueDepth"])

    name = out.family("queue_length", "gauge", "Requests waiting for a free backend slot.")
    out.sample(name, [], snap["queue"]["length"])
    name = out.family("queue_capacity", "gauge", "Size of the wait queue.")
    out.sample(name, [], snap["queue"]["capacity"])
    demand = snap.get("demand") or {}
    name = out.family("arrivals_total", "counter",
                      "Inference requests received (before any queueing or routing).")
    out.sample(name, [], demand.get("arrivals", 0))
    if demand.get("idleSeconds") is not None:
        name = out.family("idle_seconds", "gauge",
                          "Seconds since the last inference request arrived.")
        out.sample(name, [], demand["idleSeconds"])

    name = out.family("retries_total", "counter", "Retries on another backend, by reason.")
    for reason, n in sorted(counters.get("retries", {}).items()):
        out.sample(name, [("reason", reason)], n)
    name = out.family("retries_denied_total", "counter",
                      "Retries not made because the retry budget was spent.")
    out.sample(name, [], sum(counters.get("retriesDenied", {}).values()))
    name = out.family("ejections_total", "counter",
                      "Backends taken out of rotation by passive checks, by reason.")
    for key, n in sorted(counters.get("ejections", {}).items()):
        backend, _, reason = key.partition("|")
        out.sample(name, [("backend", backend), ("reason", reason)], n)

    name = out.family("routing_table_generation", "gauge",
                      "Generation of the routing table in use.")
    out.sample(name, [], snap["generation"])
    name = out.family("routing_table_updates_total", "counter",
                      "Routing table documents applied (result=ok) or rejected (result=error).")
    for result, n in sorted(counters.get("tableUpdates", {}).items()):
        out.sample(name, [("result", result)], n)
    return ("\n".join(out.lines) + "\n").encode()
