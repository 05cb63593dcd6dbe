"""The pure parts of the chaos suite: duplicate-pod counting, the Service
proxy's endpoints and the table (kubeinfer.localcluster.chaos, serviceproxy)."""

from typing import Any

import pytest
from kubeinfer.localcluster.chaos import ChaosResult, markdown_table, worker_slot_excess
from kubeinfer.localcluster.serviceproxy import ready_pod_ips


def pod(
    replica: str = "0",
    revision: str = "a",
    *,
    phase: str = "Running",
    deleting: bool = False,
    ready: bool = True,
    ip: str | None = "127.9.0.2",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "labels": {"kubeinfer.io/replica": replica, "kubeinfer.io/revision": revision}
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    ("pods", "allowed", "excess"),
    [
        ([pod("0"), pod("1")], 3, 0),
        # A canary beside the stable pod of the same index is a new slot.
        ([pod("0"), pod("0", "b"), pod("1")], 3, 0),
        ([pod("0"), pod("0")], 3, 1),  # two pods for one slot
        ([pod("0"), pod("1"), pod("2"), pod("3")], 3, 1),  # beyond replicas + maxSurge
        # A pod on its way out, or one that ended, holds no GPU.
        ([pod("0"), pod("0", deleting=True)], 1, 0),
        ([pod("0"), pod("0", phase="Failed")], 1, 0),
        ([pod("0"), pod("0"), pod("0")], 1, 2),
        ([], 2, 0),
    ],
)
def test_worker_slot_excess(pods: list[dict[str, Any]], allowed: int, excess: int) -> None:
    assert worker_slot_excess(pods, allowed) == excess


def test_ready_pod_ips_serves_only_ready_pods_not_terminating() -> None:
    pods = [
        pod(ip="127.9.0.3"),
        pod(ip="127.9.0.2"),
        pod(ready=False, ip="127.9.0.4"),
        pod(deleting=True, ip="127.9.0.5"),
        pod(ip=None),
    ]
    assert ready_pod_ips(pods) == ["127.9.0.2", "127.9.0.3"]


def test_markdown_table_has_one_row_per_result() -> None:
    result = ChaosResult(
        scenario="router killed",
        requests=300,
        nonstreaming_failed=1,
        streams_failed=0,
        seconds_to_desired=6.54,
        duplicate_pods=0,
        most_worker_pods=2,
        allowed_worker_pods=3,
        router_pods_lost=1,
    )
    lines = markdown_table([result, result]).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| router killed | 300 | 1 | 0 | 6.5 | 0 | 1 |"
