"""Simulated GPU nodes: the topology file and the Node objects built from it.

A topology file lists node groups::

    nodes:
      - name: gpu-h100          # nodes gpu-h100-0, gpu-h100-1
        count: 2
        gpu: {product: NVIDIA-H100-80GB-HBM3, count: 4, memoryMiB: 81559, compute: "9.0"}
      - name: gpu-a400
        count: 1
        gpu: {product: NVIDIA-RTX-A400, count: 2, memoryMiB: 4096}
        labels: {example.com/tier: small}
        taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]

Labels follow NVIDIA GPU feature discovery: the product name with spaces
replaced by dashes, memory in MiB, the GPU count, and the compute
capability (gpu.compute.major/minor) when ``compute`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.operator.api import constants as c
from pydantic import BaseModel, ConfigDict, Field

GPU_RESOURCE = c.GPU_RESOURCE
LABEL_GPU_PRODUCT = c.LABEL_GPU_PRODUCT
LABEL_GPU_MEMORY = c.LABEL_GPU_MEMORY
LABEL_GPU_COUNT = c.LABEL_GPU_COUNT
LABEL_GPU_PRESENT = c.LABEL_GPU_PRESENT
LABEL_GPU_COMPUTE_MAJOR = c.LABEL_GPU_COMPUTE_MAJOR
LABEL_GPU_COMPUTE_MINOR = c.LABEL_GPU_COMPUTE_MINOR
# KWOK manages nodes carrying this annotation (and only those).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
# Set by `kubeinfer cluster node-down`; KWOK stages then mark the node NotReady.
NODE_DOWN_ANNOTATION = "localcluster.kubeinfer.io/node-down"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GpuSpec(_Model):
    product: str
    count: int = Field(ge=0)
    memory_mib: int = Field(alias="memoryMiB", ge=0)
    # CUDA compute capability, "major.minor" (GFD's gpu.compute.* labels).
    compute: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+$")


class Taint(_Model):
    key: str
    value: str = ""
    effect: str


class NodeGroup(_Model):
    name: str
    count: int = Field(default=1, ge=1)
    gpu: GpuSpec | None = None
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)


class Topology(_Model):
    nodes: list[NodeGroup]


DEFAULT_TOPOLOGY = Topology(
    nodes=[
        NodeGroup(
            name="gpu-h100",
            count=2,
            gpu=GpuSpec(product="NVIDIA-H100-80GB-HBM3", count=4, memory_mib=81559, compute="9.0"),
        ),
        NodeGroup(
            name="gpu-a400",
            count=1,
            gpu=GpuSpec(product="NVIDIA-RTX-A400", count=2, memory_mib=4096, compute="8.6"),
        ),
    ]
)


def load_topology(path: Path | None) -> Topology:
    """Read a topology file; the default topology when path is None."""
    if path is None:
        return DEFAULT_TOPOLOGY
    return Topology.model_validate(yaml.safe_load(path.read_text()))


@dataclass(frozen=True)
class SimulatedNode:
    """One node of the topology, with its place in the loopback address space."""

    name: str
    index: int
    group: NodeGroup
    pod_cidr: str
    node_ip: str


def expand(topology: Topology, octet: int) -> list[SimulatedNode]:
    """Give every node a name and a /24 in 127.<octet>.<index>.0 (octet picks the cluster)."""
    nodes: list[SimulatedNode] = []
    for group in topology.nodes:
        for i in range(group.count):
            index = len(nodes)
            if index > 255:
                raise ValueError("a topology may hold at most 256 nodes")
            nodes.append(
                SimulatedNode(
                    name=f"{group.name}-{i}",
                    index=index,
                    group=group,
                    pod_cidr=f"127.{octet}.{index}.0/24",
                    node_ip=f"127.{octet}.{index}.1",
                )
            )
    return nodes


def build_node(node: SimulatedNode) -> dict[str, Any]:
    """The Node object for a simulated node (status included: nodes may set it on create)."""
    group = node.group
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    capacity: dict[str, str] = {"cpu": group.cpu, "memory": group.memory, "pods": str(group.pods)}
    if group.gpu:
        labels |= {
            LABEL_GPU_PRODUCT: group.gpu.product,
            LABEL_GPU_MEMORY: str(group.gpu.memory_mib),
            LABEL_GPU_COUNT: str(group.gpu.count),
            LABEL_GPU_PRESENT: "true",
        }
        if group.gpu.compute:
            major, minor = group.gpu.compute.split(".")
            labels |= {LABEL_GPU_COMPUTE_MAJOR: major, LABEL_GPU_COMPUTE_MINOR: minor}
        capacity[GPU_RESOURCE] = str(group.gpu.count)
    labels |= group.labels
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {
            "podCIDR": node.pod_cidr,
            "podCIDRs": [node.pod_cidr],
            "taints": [t.model_dump(exclude_defaults=False) for t in group.taints],
        },
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [
                {"type": "InternalIP", "address": node.node_ip},
                {"type": "Hostname", "address": node.name},
            ],
        },
    }
