"""The autoscaler's edge (kubeinfer.operator.scaling) without I/O: what it
reads from pods and router stats, and what it records in status and metrics."""

from typing import Any

import pytest
from kubeinfer.operator.analysis import RevisionCounters, RouterStats
from kubeinfer.operator.api import InferenceService, ObjectMeta
from kubeinfer.operator.api.status import InferenceServiceStatus
from kubeinfer.operator.autoscale import decide
from kubeinfer.operator.observe import NodeInfo, PodInfo
from kubeinfer.operator.scaling import (
    AutoscalerMemory,
    record,
    scale_input,
    signals_from,
    with_written_replicas,
)
from prometheus_client import REGISTRY

NOW = 1_000_000.0
NODES = {"gpu-0": NodeInfo("gpu-0", True, "NVIDIA-H100-80GB-HBM3", 81559)}


def isvc(replicas: int = 3, phase: str = "Idle", version: str = "7") -> InferenceService:
    return InferenceService.model_validate(
        {
            "metadata": ObjectMeta(
                name="llm", namespace="ns", uid="u", generation=1, resource_version=version
            ).to_dict(),
            "spec": {
                "model": {"name": "m", "source": "org/m"},
                "replicas": replicas,
                "autoscaling": {"maxReplicas": 8},
            },
            "status": {"rollout": {"phase": phase}},
        }
    )


def pod(name: str, **fields: Any) -> PodInfo:
    base: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "service": "llm",
        "component": "worker",
        "revision": "r1",
        "replica": 0,
        "phase": "Running",
        "ip": "127.1.0.9",
        "node": "gpu-0",
        "ready": True,
        "deleting": False,
        "restarts": 0,
        "created_at": NOW - 100,
        "ready_since": NOW - 90,
        "unschedulable_message": None,
        "termination_message": None,
        "exit_code": None,
        "failures": 0,
        "draining_since": None,
    }
    return PodInfo(**{**base, **fields})


PODS = [
    pod("ready-1"),
    pod("ready-2"),
    pod("starting", ready=False, phase="Pending", ready_since=None),
    pod(
        "pending",
        ready=False,
        phase="Pending",
        node=None,
        ready_since=None,
        unschedulable_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    ),
    pod("draining", draining_since=NOW - 1),
    pod("gone", deleting=True),
]


def test_scale_input_counts_ready_starting_and_unschedulable_pods() -> None:
    inp = scale_input(isvc(phase="Analysing"), PODS, NODES, None, (), NOW)
    assert (inp.current, inp.ready, inp.starting, inp.unschedulable) == (3, 2, 1, 1)
    assert inp.rollout_active
    assert inp.signals is None
    assert not scale_input(isvc(phase="Failed"), PODS, NODES, None, (), NOW).rollout_active


def test_signals_add_up_routers_and_take_ttft_of_the_busiest_revision() -> None:
    stats = RouterStats(
        routers=2,
        revisions={
            "stable": RevisionCounters(p90_ttft_ms=120.0, window_requests=900),
            "canary": RevisionCounters(p90_ttft_ms=900.0, window_requests=40),
        },
        in_flight={"a": 5, "b": 7},
        queued=3,
        idle_seconds=0.5,
    )
    s = signals_from(stats)
    assert s is not None
    assert (s.routers, s.in_flight, s.queued, s.idle_seconds) == (2, 12, 3, 0.5)
    assert (s.ttft_p90_ms, s.ttft_requests) == (120.0, 900)
    assert signals_from(None) is None


def test_record_fills_status_and_metrics() -> None:
    service = isvc(replicas=2)
    stats = RouterStats(routers=1, in_flight={"a": 100}, queued=10, idle_seconds=0.0)
    inp = scale_input(service, PODS[:2], NODES, stats, (), NOW)
    decision = decide(inp)  # the window is not covered yet: StabilizingUp
    status = InferenceServiceStatus(replicas=2)
    record(service, status, inp, decision, None, NOW)
    assert status.autoscaling is not None
    assert status.autoscaling.reason == "StabilizingUp"
    assert status.autoscaling.recommendation == 4  # ceil(110 / 32)
    assert status.autoscaling.signals is not None
    assert status.autoscaling.signals.per_replica == 55.0
    assert status.autoscaling.last_decision is None
    labels = {"namespace": "ns", "service": "llm"}
    assert REGISTRY.get_sample_value(
        "kubeinfer_operator_autoscaling_signal", {**labels, "signal": "queued"}
    ) == pytest.approx(10)
    before = (
        REGISTRY.get_sample_value(
            "kubeinfer_operator_autoscaling_decisions_total",
            {"direction": "up", "reason": "StabilizingUp"},
        )
        or 0.0
    )
    record(service, status, inp, decision, 1, NOW)  # as if it had changed 1 -> 2 (desired)
    assert status.autoscaling.last_decision is not None
    assert (
        status.autoscaling.last_decision.from_replicas,
        status.autoscaling.last_decision.to_replicas,
    ) == (1, 2)
    after = REGISTRY.get_sample_value(
        "kubeinfer_operator_autoscaling_decisions_total",
        {"direction": "up", "reason": "StabilizingUp"},
    )
    assert after == before + 1


def test_replicas_we_wrote_are_used_until_the_watch_catches_up() -> None:
    memory = AutoscalerMemory()
    memory.written[("ns", "llm")] = ("7", 5)
    assert with_written_replicas(memory, isvc(replicas=2, version="7")).spec.replicas == 5
    assert with_written_replicas(memory, isvc(replicas=5, version="8")).spec.replicas == 5
    assert memory.written == {}
    assert with_written_replicas(memory, isvc(replicas=2, version="9")).spec.replicas == 2
