"""What the operator sees: pods and nodes, parsed into small frozen records.

Parsing happens once, when a watch event arrives (kopf indexes store these
records, not raw bodies), so the decision code works on plain data and the
memory per pod stays small at hundreds of pods.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.exits import ExitCode

# With terminationMessagePolicy FallbackToLogsOnError the message can be
# the tail of the logs; status shows its last line, shortened.
MAX_REASON_CHARS = 200


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    gpu_product: str | None
    gpu_memory_mib: int | None
    unschedulable: bool = False


@dataclass(frozen=True)
class PodInfo:
    """A worker or router pod of one InferenceService."""

    name: str
    namespace: str
    service: str
    component: str
    revision: str | None
    replica: int | None
    phase: str
    ip: str | None
    node: str | None
    ready: bool
    deleting: bool
    restarts: int
    created_at: float | None
    ready_since: float | None
    unschedulable_message: str | None
    termination_message: str | None
    exit_code: int | None
    failures: int
    draining_since: float | None
    # Whether the pod was given a GPU; CPU workers (gpu.count 0) were not.
    # Pods from before gpu.count existed all had one.
    has_gpu: bool = True

    @property
    def scheduled(self) -> bool:
        return self.node is not None

    @property
    def gpu_fault(self) -> str | None:
        """The worker's reason when it left because of its GPU (its exit
        code says so): restarting on the same GPU can't help, the pod must move."""
        if self.exit_code != ExitCode.GPU_FAULT:
            return None
        return self.termination_message or f"GPU fault (exit code {ExitCode.GPU_FAULT:d})"


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _requests_gpu(spec: dict[str, Any]) -> bool:
    """A container limits an extended resource (nvidia.com/gpu, a MIG profile,
    ...): the only ones a worker asks for are GPUs. Core resources (cpu,
    memory, ephemeral-storage, hugepages-*) have no domain prefix."""
    for container in spec.get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        if any("/" in name for name in limits):
            return True
    return False


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def _last_termination(status: dict[str, Any]) -> tuple[str | None, int | None]:
    """The newest termination message and exit code of the first container."""
    for cs in status.get("containerStatuses") or []:
        for state_key in ("state", "lastState"):
            terminated = (cs.get(state_key) or {}).get("terminated")
            if terminated:
                lines = (terminated.get("message") or "").strip().splitlines()
                message = lines[-1].strip()[:MAX_REASON_CHARS] if lines else None
                return message or None, terminated.get("exitCode")
    return None, None


def observe_pod(body: dict[str, Any]) -> PodInfo:
    """Parse a Pod (as the API returns it) into a PodInfo."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    ready_cond = _condition(status, "Ready")
    scheduled_cond = _condition(status, "PodScheduled")
    message, exit_code = _last_termination(status)
    restarts = sum(cs.get("restartCount", 0) for cs in status.get("containerStatuses") or [])
    unschedulable = None
    if scheduled_cond.get("status") == "False" and scheduled_cond.get("reason") == "Unschedulable":
        unschedulable = scheduled_cond.get("message") or "Unschedulable"
    ready = ready_cond.get("status") == "True"
    return PodInfo(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        service=labels.get(c.LABEL_SERVICE, ""),
        component=labels.get(c.LABEL_COMPONENT, ""),
        revision=labels.get(c.LABEL_REVISION),
        replica=_int_or_none(labels.get(c.LABEL_REPLICA)),
        phase=status.get("phase") or "Pending",
        ip=status.get("podIP"),
        node=spec.get("nodeName"),
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
        restarts=restarts,
        created_at=parse_time(meta.get("creationTimestamp")),
        ready_since=parse_time(ready_cond.get("lastTransitionTime")) if ready else None,
        unschedulable_message=unschedulable,
        termination_message=message,
        exit_code=exit_code,
        failures=_int_or_none(annotations.get(c.ANNOTATION_FAILURES)) or 0,
        draining_since=parse_time(annotations.get(c.ANNOTATION_DRAINING)),
        has_gpu=_requests_gpu(spec),
    )


def observe_node(body: dict[str, Any]) -> NodeInfo:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    ready = _condition(body.get("status") or {}, "Ready").get("status") == "True"
    return NodeInfo(
        name=meta.get("name", ""),
        ready=ready,
        gpu_product=labels.get(c.LABEL_GPU_PRODUCT),
        gpu_memory_mib=_int_or_none(labels.get(c.LABEL_GPU_MEMORY)),
        unschedulable=bool((body.get("spec") or {}).get("unschedulable")),
    )
