"""The operator's Prometheus metrics (served on --metrics-port at /metrics).

Two kinds: counters of the operator's own work (reconciles, their
duration, events), and gauges that mirror every InferenceService's status
(desired and ready replicas, canary weight, rollout phase, conditions), so
dashboards and alerts read the same numbers `kubectl get infsvc` shows.

The per-InferenceService series are labelled ``service_namespace`` and
``kubeinfer_io_service``: Prometheus gives the scraped pod's own namespace
the label ``namespace``, which would rename ours to ``exported_namespace``;
``kubeinfer_io_service`` is what scrape configs make of the pods' label
``kubeinfer.io/service``, so both sides of a dashboard use one name.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from kubeinfer.operator.api.status import (
    ConditionStatus,
    ConditionType,
    InferenceServiceStatus,
    Phase,
    RolloutPhase,
)
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

RECONCILES = Counter(
    "kubeinfer_operator_reconciles_total",
    "Reconciles of InferenceServices, by result (ok or error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "kubeinfer_operator_reconcile_seconds",
    "Time of one reconcile (observe, plan, act).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter(
    "kubeinfer_operator_events_total",
    "Transitions and actions posted as Kubernetes Events, by reason.",
    ["reason"],
)
LEADER = Gauge(
    "kubeinfer_operator_leader",
    "1 while this operator process holds the leader-election Lease (or runs "
    "without leader election), 0 while it stands by.",
)
# Both results exist from the start, so rate() and alerts see a 0, not nothing.
for _result in ("ok", "error"):
    RECONCILES.labels(_result)

SERVICE_LABELS = ["service_namespace", "kubeinfer_io_service"]


@dataclass(frozen=True)
class ServiceSnapshot:
    """What the gauges show for one InferenceService (from its last status)."""

    desired_replicas: int
    status: InferenceServiceStatus


class FleetCollector:
    """Gauges of every InferenceService this operator reconciles.

    The reconcile loop records each status it computes and forgets the
    object when its daemon stops (deleted, or no longer ours), so a
    deleted InferenceService leaves no stale series behind.
    """

    def __init__(self) -> None:
        self._services: dict[tuple[str, str], ServiceSnapshot] = {}

    def record(
        self, namespace: str, name: str, desired: int, status: InferenceServiceStatus
    ) -> None:
        self._services[(namespace, name)] = ServiceSnapshot(desired, status)

    def forget(self, namespace: str, name: str) -> None:
        self._services.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        def family(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*SERVICE_LABELS, *extra])

        desired = family("kubeinfer_inferenceservice_replicas_desired", "spec.replicas.")
        existing = family("kubeinfer_inferenceservice_replicas", "Worker pods that exist.")
        ready = family("kubeinfer_inferenceservice_replicas_ready", "Worker pods in rotation.")
        weight = family(
            "kubeinfer_inferenceservice_canary_weight_percent",
            "Percent of traffic sent to the canary revision (0 without a rollout).",
        )
        phase = family(
            "kubeinfer_inferenceservice_phase",
            "1 for the InferenceService's current phase (kubectl get's PHASE).",
            ("phase",),
        )
        rollout = family(
            "kubeinfer_inferenceservice_rollout_phase",
            "1 for the canary state machine's current phase.",
            ("phase",),
        )
        condition = family(
            "kubeinfer_inferenceservice_condition",
            "1 while the condition is True, with its reason.",
            ("condition", "reason"),
        )
        revision = family(
            "kubeinfer_inferenceservice_revision_info",
            "The revisions serving, by role (stable or canary).",
            ("role", "revision"),
        )
        gpus = family(
            "kubeinfer_inferenceservice_workers",
            "Worker pods by GPU product (empty on CPU workers) and readiness.",
            ("gpu_product", "ready"),
        )
        for (namespace, name), snap in sorted(self._services.items()):
            key = [namespace, name]
            status = snap.status
            desired.add_metric(key, snap.desired_replicas)
            existing.add_metric(key, status.replicas)
            ready.add_metric(key, status.ready_replicas)
            weight.add_metric(key, status.canary_weight)
            for p in Phase:
                phase.add_metric([*key, p.value], 1.0 if status.phase is p else 0.0)
            for r in RolloutPhase:
                rollout.add_metric([*key, r.value], 1.0 if status.rollout.phase is r else 0.0)
            for t in ConditionType:
                found = next((x for x in status.conditions if x.type == t.value), None)
                true = found is not None and found.status is ConditionStatus.TRUE
                reason = found.reason if found is not None else ""
                condition.add_metric([*key, t.value, reason], 1.0 if true else 0.0)
            if status.stable_revision:
                revision.add_metric([*key, "stable", status.stable_revision], 1.0)
            if status.canary_revision:
                revision.add_metric([*key, "canary", status.canary_revision], 1.0)
            counts: dict[tuple[str, str], int] = {}
            for row in status.replica_statuses:
                group = (row.gpu_product or "", "true" if row.ready else "false")
                counts[group] = counts.get(group, 0) + 1
            for (product, is_ready), n in sorted(counts.items()):
                gpus.add_metric([*key, product, is_ready], n)
        yield from (desired, existing, ready, weight, phase, rollout, condition, revision, gpus)


def register_fleet(registry: CollectorRegistry = REGISTRY) -> FleetCollector:
    collector = FleetCollector()
    registry.register(collector)
    return collector


AUTOSCALING_DECISIONS = Counter(
    "kubeinfer_operator_autoscaling_decisions_total",
    "Changes of replicas made by the autoscaler, by direction (up, down) and reason.",
    ["direction", "reason"],
)
AUTOSCALING_REPLICAS = Gauge(
    "kubeinfer_operator_autoscaling_replicas",
    "Replicas per InferenceService: desired (the decision), recommended (the signals, "
    "before windows and limits) and ready.",
    ["namespace", "service", "kind"],
)
AUTOSCALING_SIGNAL = Gauge(
    "kubeinfer_operator_autoscaling_signal",
    "The routers' load signals read by the autoscaler: in_flight, queued, idle_seconds, "
    "ttft_p90_ms.",
    ["namespace", "service", "signal"],
)
