"""API calls the API server counted (its /metrics), by verb and resource,
and the operator's own reconcile counters.

The API server does not count per client, so a delta mixes every client.
The resources the benchmark reports are written by the operator alone
(InferenceService status, routing ConfigMaps, router RBAC objects) or, for
pods, created by it alone; reads and pod status updates also come from the
scheduler, KWOK and the controllers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

_LABEL = re.compile(r'(\w+)="([^"]*)"')
Key = tuple[str, str]  # (verb, resource[/subresource])


def _series(text: str, name: str, code_prefix: str | None = None) -> dict[Key, float]:
    line_pattern = re.compile(rf"^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$")
    values: dict[Key, float] = defaultdict(float)
    for line in text.splitlines():
        match = line_pattern.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        if code_prefix is not None and not labels.get("code", "").startswith(code_prefix):
            continue
        values[(labels.get("verb", ""), resource)] += float(match["value"])
    return values


def _by_label(text: str, name: str, label: str) -> dict[str, float]:
    line_pattern = re.compile(rf"^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$")
    values: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        match = line_pattern.match(line)
        if match:
            values[dict(_LABEL.findall(match["labels"])).get(label, "")] += float(match["value"])
    return values


@dataclass(frozen=True)
class RequestStats:
    counts: dict[Key, float]
    conflicts: dict[Key, float]  # answered 409: a create of what exists, a stale update
    seconds: dict[Key, float]  # summed time the API server spent answering
    # Time requests waited in API Priority and Fairness queues, by priority level.
    queued_seconds: dict[str, float]
    queued_count: dict[str, float]


_APF_WAIT = "apiserver_flowcontrol_request_wait_duration_seconds"


def parse_request_stats(text: str) -> RequestStats:
    return RequestStats(
        counts=_series(text, "apiserver_request_total"),
        conflicts=_series(text, "apiserver_request_total", code_prefix="409"),
        seconds=_series(text, "apiserver_request_duration_seconds_sum"),
        queued_seconds=_by_label(text, f"{_APF_WAIT}_sum", "priority_level"),
        queued_count=_by_label(text, f"{_APF_WAIT}_count", "priority_level"),
    )


def queue_delta(after: RequestStats, before: RequestStats) -> dict[str, dict[str, float]]:
    """Requests and their mean wait in API Priority and Fairness, by priority level."""
    rows = {}
    for level, count in after.queued_count.items():
        n = count - before.queued_count.get(level, 0)
        if n > 0:
            waited = after.queued_seconds.get(level, 0) - before.queued_seconds.get(level, 0)
            rows[level] = {"n": n, "mean_ms": 1000 * waited / n}
    return rows


def request_delta(after: RequestStats, before: RequestStats) -> dict[str, dict[str, float]]:
    """Calls made between two snapshots, {"VERB resource": {"n", "mean_ms"}}, most first.

    WATCH calls are left out: their duration is the watch's lifetime.
    """
    rows = {}
    for key in after.counts:
        verb, resource = key
        n = after.counts[key] - before.counts.get(key, 0)
        if n <= 0 or verb == "WATCH":
            continue
        seconds = after.seconds.get(key, 0) - before.seconds.get(key, 0)
        conflicts = after.conflicts.get(key, 0) - before.conflicts.get(key, 0)
        rows[f"{verb} {resource}"] = {"n": n, "conflicts": conflicts, "mean_ms": 1000 * seconds / n}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["n"]))


_RECONCILE_SERIES = {
    'kubeinfer_operator_reconciles_total{result="ok"}': "reconciles",
    'kubeinfer_operator_reconciles_total{result="error"}': "reconcile_errors",
    "kubeinfer_operator_reconcile_seconds_sum": "reconcile_seconds",
}


def parse_reconciles(text: str) -> dict[str, float]:
    """Reconciles (ok, error) and their summed wall time from the operator's /metrics."""
    found = dict.fromkeys(_RECONCILE_SERIES.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in _RECONCILE_SERIES:
            found[_RECONCILE_SERIES[name]] = float(value)
    return found


def reconcile_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    diff = {key: after[key] - before.get(key, 0.0) for key in after}
    count = diff["reconciles"] + diff["reconcile_errors"]
    diff["mean_reconcile_ms"] = 1000 * diff["reconcile_seconds"] / count if count else 0.0
    return diff
