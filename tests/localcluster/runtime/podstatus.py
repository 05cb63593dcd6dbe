"""Pure: a pod's phase and conditions from its container states (kubelet's rules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeinfer.localcluster.runtime.container import now


@dataclass(frozen=True)
class ContainerView:
    """What the phase rules need to know about one container."""

    ever_started: bool
    running: bool
    ready: bool
    finished: bool
    succeeded: bool


def pod_phase(init: list[ContainerView], main: list[ContainerView]) -> str:
    """Pending until init containers succeeded and a container ran; then Running,
    Succeeded or Failed once every container is finished for good."""
    if any(c.finished and not c.succeeded for c in init):
        return "Failed"
    if not all(c.finished and c.succeeded for c in init):
        return "Pending"
    if main and all(c.finished for c in main):
        return "Succeeded" if all(c.succeeded for c in main) else "Failed"
    if any(c.ever_started for c in main):
        return "Running"
    return "Pending"


class Conditions:
    """The pod conditions the runtime owns, keeping lastTransitionTime stable."""

    OWNED = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")

    def __init__(self) -> None:
        self._since: dict[str, tuple[str, str]] = {}

    def build(self, values: dict[str, bool], reasons: dict[str, str]) -> list[dict[str, Any]]:
        conditions = []
        for kind in self.OWNED:
            status = "True" if values[kind] else "False"
            previous = self._since.get(kind)
            if previous is None or previous[0] != status:
                self._since[kind] = (status, now())
            condition: dict[str, Any] = {
                "type": kind,
                "status": status,
                "lastTransitionTime": self._since[kind][1],
                "lastProbeTime": None,
            }
            if not values[kind] and kind in reasons:
                condition["reason"] = reasons[kind]
            conditions.append(condition)
        return conditions


def readiness_gates_pass(pod: dict[str, Any]) -> bool:
    """True when every readiness gate's condition (set by someone else) is True."""
    gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
    current = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions") or []}
    return all(current.get(gate) == "True" for gate in gates)
