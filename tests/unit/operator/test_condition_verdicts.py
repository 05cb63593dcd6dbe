"""Each condition's rule on its own: tables of what was seen -> verdict."""

import dataclasses

import pytest
from kubeinfer.operator.api.status import ConditionStatus, RolloutPhase
from kubeinfer.operator.conditions import Seen, degraded_verdict, ready_verdict
from kubeinfer.operator.observe import PodInfo

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE
STEADY = Seen(
    want=2,
    live=2,
    serving=2,
    starting=0,
    unschedulable=[],
    failed={},
    routers_ok=True,
    plan_busy=False,
    phase=RolloutPhase.IDLE,
)
PENDING = PodInfo(
    name="p", namespace="ns", service="s", component="worker", revision="r", replica=1,
    phase="Pending", ip=None, node=None, ready=False, deleting=False, restarts=0,
    created_at=0.0, ready_since=None,
    unschedulable_message="0/3 nodes: Insufficient nvidia.com/gpu",
    termination_message=None, exit_code=None, failures=0, draining_since=None,
)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, (T, "AllReplicasReady", "2/2 workers ready")),
        ({"want": 0, "serving": 0}, (T, "ScaledToZero", "replicas is 0")),
        ({"routers_ok": False}, (F, "RouterNotReady", "no router pod is ready")),
        ({"serving": 1}, (F, "WorkersNotReady", "1/2 workers ready")),
    ],
)
def test_ready(changes: dict[str, object], expected: tuple[object, ...]) -> None:
    assert ready_verdict(dataclasses.replace(STEADY, **changes)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "cpu_only", "reason"),
    [
        ({}, False, "AsExpected"),
        # Unschedulable wins over everything, and says what it waits for.
        ({"unschedulable": [PENDING], "failed": {"x": "GPU lost"}}, False, "InsufficientGPU"),
        ({"unschedulable": [PENDING]}, True, "Unschedulable"),
        ({"failed": {"b": "GPU lost", "a": "crash loop"}}, False, "ReplacingFailedPods"),
        ({"serving": 1}, False, "WorkersNotReady"),
        # Fewer ready workers is expected while they start or a rollout runs.
        ({"serving": 1, "starting": 1}, False, "AsExpected"),
        ({"serving": 1, "phase": RolloutPhase.ANALYSING}, False, "AsExpected"),
        ({"serving": 1, "plan_busy": True}, False, "AsExpected"),
    ],
)
def test_degraded(changes: dict[str, object], cpu_only: bool, reason: str) -> None:
    seen = dataclasses.replace(STEADY, **changes)  # type: ignore[arg-type]
    status, got, _ = degraded_verdict(seen, cpu_only)
    assert (status, got) == ((F if reason == "AsExpected" else T), reason)


def test_degraded_names_the_first_failed_pod_and_what_pending_waits_for() -> None:
    failed = dataclasses.replace(STEADY, failed={"b": "GPU lost", "a": "crash loop"})
    assert degraded_verdict(failed, False)[2] == "2 failed: a: crash loop"
    waiting = dataclasses.replace(STEADY, unschedulable=[PENDING])
    assert degraded_verdict(waiting, False)[2] == (
        "1 of 2 worker pods cannot be scheduled: 0/3 nodes: Insufficient nvidia.com/gpu"
    )
