"""The stage: a local cluster with enough simulated GPUs, the CRD, the
operator's least-privilege identity, and the operator itself as a process
pinned to one core."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubeinfer.localcluster import controlplane, operatorproc
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for

GPUS_PER_NODE = 8


def write_topology(path: Path, nodes: int) -> Path:
    """``nodes`` simulated H100 nodes with 8 GPUs each."""
    topology = {
        "nodes": [
            {
                "name": "gpu",
                "count": nodes,
                "gpu": {
                    "product": "NVIDIA-H100-80GB-HBM3",
                    "count": GPUS_PER_NODE,
                    "memoryMiB": 81559,
                },
            }
        ]
    }
    path.write_text(yaml.safe_dump(topology))
    return path


def start_cluster(root: Path, nodes: int, progress: controlplane.Progress) -> ClusterState:
    """Start a cluster in root; tied to this process, so it dies with it.

    Raises StartupError or BuildError when it cannot start.
    """
    topology = write_topology(root.parent / f"{root.name}-topology.yaml", nodes)
    return controlplane.up(root, topology_path=topology, progress=progress, tie_to_parent=True)


def install_operator_identity(state: ClusterState, out: Path) -> Path:
    """The CRD and the operator's production RBAC identity (the same
    bootstrap the tests use); returns its kubeconfig."""
    return operatorproc.install_operator_identity(admin_client(Path(state.root)), state, out)


def create_namespace(kube: KubeClient, name: str) -> None:
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    # The ServiceAccount admission plugin rejects pods until this exists.
    wait_for(
        lambda: kube.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        30,
        what=f"the default ServiceAccount in {name}",
    )


