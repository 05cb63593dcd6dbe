"""The operator's per-InferenceService gauges (kubeinfer.operator.metrics)."""

from kubeinfer.operator.api.status import (
    Condition,
    ConditionStatus,
    InferenceServiceStatus,
    Phase,
    ReplicaStatus,
    RolloutPhase,
    RolloutStatus,
)
from kubeinfer.operator.metrics import FleetCollector
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

KEY = {"service_namespace": "ml", "kubeinfer_io_service": "chat"}


def samples(fleet: FleetCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(fleet)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset({**KEY, **labels}.items()))]


def canary_status() -> InferenceServiceStatus:
    return InferenceServiceStatus(
        phase=Phase.PROGRESSING,
        replicas=3,
        ready_replicas=2,
        canary_weight=25,
        stable_revision="aaa",
        canary_revision="bbb",
        rollout=RolloutStatus(phase=RolloutPhase.ANALYSING),
        conditions=[
            Condition(type="Degraded", status=ConditionStatus.TRUE, reason="InsufficientGPU"),
            Condition(type="RolledBack", status=ConditionStatus.FALSE, reason="NoRollback"),
        ],
        replica_statuses=[
            ReplicaStatus(pod="a", replica=0, revision="aaa", gpu_product="H100", ready=True),
            ReplicaStatus(pod="b", replica=1, revision="aaa", gpu_product="H100", ready=True),
            ReplicaStatus(pod="c", replica=0, revision="bbb", gpu_product="H100", ready=False),
        ],
    )


def test_gauges_mirror_the_status() -> None:
    fleet = FleetCollector()
    fleet.record("ml", "chat", 2, canary_status())
    found = samples(fleet)
    assert value(found, "kubeinfer_inferenceservice_replicas_desired") == 2
    assert value(found, "kubeinfer_inferenceservice_replicas") == 3
    assert value(found, "kubeinfer_inferenceservice_replicas_ready") == 2
    assert value(found, "kubeinfer_inferenceservice_canary_weight_percent") == 25
    assert value(found, "kubeinfer_inferenceservice_phase", phase="Progressing") == 1
    assert value(found, "kubeinfer_inferenceservice_phase", phase="Ready") == 0
    assert value(found, "kubeinfer_inferenceservice_rollout_phase", phase="Analysing") == 1
    assert value(found, "kubeinfer_inferenceservice_rollout_phase", phase="Idle") == 0
    degraded = {"condition": "Degraded", "reason": "InsufficientGPU"}
    assert value(found, "kubeinfer_inferenceservice_condition", **degraded) == 1
    rolled_back = {"condition": "RolledBack", "reason": "NoRollback"}
    assert value(found, "kubeinfer_inferenceservice_condition", **rolled_back) == 0
    # A condition not set yet is exported as 0 with an empty reason.
    assert value(found, "kubeinfer_inferenceservice_condition", condition="Ready", reason="") == 0
    for role, revision in (("stable", "aaa"), ("canary", "bbb")):
        info = {"role": role, "revision": revision}
        assert value(found, "kubeinfer_inferenceservice_revision_info", **info) == 1
    workers = "kubeinfer_inferenceservice_workers"
    assert value(found, workers, gpu_product="H100", ready="true") == 2
    assert value(found, workers, gpu_product="H100", ready="false") == 1


def test_a_forgotten_service_leaves_no_series() -> None:
    fleet = FleetCollector()
    fleet.record("ml", "chat", 2, canary_status())
    fleet.record("ml", "other", 1, InferenceServiceStatus())
    fleet.forget("ml", "chat")
    names = {labels for (_, labels) in samples(fleet)}
    assert all(("kubeinfer_io_service", "other") in labels for labels in names)
    fleet.forget("ml", "other")
    assert samples(fleet) == {}
