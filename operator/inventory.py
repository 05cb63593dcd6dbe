"""The GPU inventory (pure), for `kubectl kubeinfer gpus`.

From what a read-only user can list: nodes (GPU feature discovery labels,
allocatable GPUs), pods (who holds the GPUs) and InferenceServices (whose
status carries each worker's GPU as its agent reported it: UUID, memory,
health, faults). Nodes without feature discovery labels are shown with
what is known (the allocatable resource), never dropped.
"""

from dataclasses import dataclass, field
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.status import InferenceServiceStatus
from kubeinfer.operator.placement import is_kubeinfer_worker, node_states

LABEL_PRODUCT = c.LABEL_GPU_PRODUCT
LABEL_MEMORY = c.LABEL_GPU_MEMORY
LABEL_COUNT = c.LABEL_GPU_COUNT
LABEL_COMPUTE_MAJOR = c.LABEL_GPU_COMPUTE_MAJOR
LABEL_COMPUTE_MINOR = c.LABEL_GPU_COMPUTE_MINOR
GFD_PREFIX = c.GFD_LABEL_PREFIX


@dataclass(frozen=True)
class WorkerGpu:
    """One kubeinfer worker on a node, with its GPU as reported."""

    namespace: str
    service: str
    pod: str
    revision: str
    replica: int
    ready: bool
    gpu_uuid: str | None = None
    memory_mib: int | None = None
    memory_used_mib: int | None = None
    health: str | None = None
    fault: str | None = None


@dataclass
class GpuNodeRow:
    node: str
    ready: bool
    product: str | None
    memory_mib: int | None
    compute: str | None
    count: int | None
    resource: str
    allocatable: int
    allocated: int
    workers: list[WorkerGpu] = field(default_factory=list)
    other_pods: int = 0  # pods of others holding GPUs here
    last_fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "ready": self.ready,
            "product": self.product,
            "memoryMiB": self.memory_mib,
            "computeCapability": self.compute,
            "count": self.count,
            "resource": self.resource,
            "allocatable": self.allocatable,
            "allocated": self.allocated,
            "otherPods": self.other_pods,
            "lastFault": self.last_fault,
            "workers": [
                {
                    "namespace": w.namespace,
                    "inferenceService": w.service,
                    "pod": w.pod,
                    "revision": w.revision,
                    "replica": w.replica,
                    "ready": w.ready,
                    "gpuUUID": w.gpu_uuid,
                    "memoryMiB": w.memory_mib,
                    "memoryUsedMiB": w.memory_used_mib,
                    "health": w.health,
                    "fault": w.fault,
                }
                for w in self.workers
            ],
        }


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _gpu_resource(labels: dict[str, str], allocatable: dict[str, Any]) -> str | None:
    """The node's GPU resource: nvidia.com/gpu, else any nvidia.com/ one
    (a MIG profile), else None."""
    if c.GPU_RESOURCE in allocatable:
        return c.GPU_RESOURCE
    for name in sorted(allocatable):
        if name.startswith("nvidia.com/"):
            return name
    return c.GPU_RESOURCE if any(k.startswith(GFD_PREFIX) for k in labels) else None


def _rows_by_pod(isvcs: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], Any], list[Any]]:
    rows: dict[tuple[str, str], Any] = {}
    faults: list[Any] = []
    for obj in isvcs:
        namespace = obj["metadata"].get("namespace", "")
        status = InferenceServiceStatus.model_validate(obj.get("status") or {})
        for row in status.replica_statuses:
            rows[(namespace, row.pod)] = row
        faults += status.gpu_faults
    return rows, faults


def build_inventory(
    nodes: list[dict[str, Any]], pods: list[dict[str, Any]], isvcs: list[dict[str, Any]]
) -> list[GpuNodeRow]:
    """One row per GPU node (and per node running kubeinfer workers)."""
    states = node_states(nodes, pods, leaving=set())
    replica_rows, faults = _rows_by_pod(isvcs)
    out = []
    for node in nodes:
        meta, status = node["metadata"], node.get("status") or {}
        name, labels = meta["name"], dict(meta.get("labels") or {})
        state = states[name]
        resource = _gpu_resource(labels, status.get("allocatable") or {})
        workers = []
        other = 0
        for pod in state.pods:
            pmeta = pod["metadata"]
            plabels = pmeta.get("labels") or {}
            if is_kubeinfer_worker(pod):
                key = (pmeta.get("namespace", ""), pmeta["name"])
                row = replica_rows.get(key)
                workers.append(
                    WorkerGpu(
                        namespace=key[0],
                        service=plabels.get(c.LABEL_SERVICE, ""),
                        pod=pmeta["name"],
                        revision=plabels.get(c.LABEL_REVISION, ""),
                        replica=_int(plabels.get(c.LABEL_REPLICA)) or 0,
                        ready=bool(row.ready) if row else False,
                        gpu_uuid=row.gpu_uuid if row else None,
                        memory_mib=row.gpu_memory_mi_b if row else None,
                        memory_used_mib=row.gpu_memory_used_mi_b if row else None,
                        health=row.gpu_health.value if row and row.gpu_health else None,
                        fault=row.gpu_fault if row else None,
                    )
                )
            elif resource and any(
                resource in ((ct.get("resources") or {}).get("limits") or {})
                for ct in (pod.get("spec") or {}).get("containers") or []
            ):
                other += 1
        if resource is None and not workers:
            continue
        major, minor = labels.get(LABEL_COMPUTE_MAJOR), labels.get(LABEL_COMPUTE_MINOR)
        node_faults = [f for f in faults if f.node == name]
        last = max(node_faults, key=lambda f: f.at or "", default=None)
        out.append(
            GpuNodeRow(
                node=name,
                ready=state.ready,
                product=labels.get(LABEL_PRODUCT),
                memory_mib=_int(labels.get(LABEL_MEMORY)),
                compute=f"{major}.{minor}" if major and minor else None,
                count=_int(labels.get(LABEL_COUNT)),
                resource=resource or "-",
                allocatable=int(state.allocatable.get(resource or "", 0)),
                allocated=int(state.allocated.get(resource or "", 0)),
                workers=sorted(workers, key=lambda w: (w.namespace, w.service, w.replica)),
                other_pods=other,
                last_fault=f"{last.at} {last.pod}: {last.reason}" if last else None,
            )
        )
    return sorted(out, key=lambda r: r.node)
