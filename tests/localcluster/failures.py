"""Failure injection by hand or from tests: kill a pod's process, take a node
down, take every free GPU."""

from __future__ import annotations

import signal
from pathlib import Path

from kubeinfer.localcluster.certs import pki_paths
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.components import Layout
from kubeinfer.localcluster.runtime.records import ProcessRecord, signal_pod
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.topology import GPU_RESOURCE, NODE_DOWN_ANNOTATION
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.builders.common import (
    restricted_container_security,
    restricted_pod_security,
)


class NoClusterError(RuntimeError):
    """No cluster is running in the given directory."""


def _state(root: Path) -> ClusterState:
    state = ClusterState.load(Layout(root).state_file)
    if state is None:
        raise NoClusterError(f"no cluster is running in {root} (kubeinfer cluster up)")
    return state


def kill_pod(
    root: Path,
    namespace: str,
    pod: str,
    container: str | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> list[ProcessRecord]:
    """Signal the local process(es) of a runtime pod, as if the container crashed.

    Raises NoClusterError when no cluster runs in root.
    """
    state = _state(root)
    return signal_pod(Path(state.root) / "runtime", namespace, pod, container, sig)


def admin_client(root: Path) -> KubeClient:
    """The admin client of the cluster running in root. Raises NoClusterError when none is."""
    state = _state(root)
    return KubeClient(
        state.server, pki_paths(Layout(root).pki), Path(state.kubectl), Path(state.kubeconfig)
    )


def set_node_down(root: Path, node: str, down: bool) -> None:
    """Mark a simulated node NotReady (its pod processes are killed) or bring it back.

    Raises NoClusterError when no cluster runs in root.
    """
    value = "true" if down else None
    admin_client(root).merge_patch(
        f"/api/v1/nodes/{node}", {"metadata": {"annotations": {NODE_DOWN_ANNOTATION: value}}}
    )


# Pods that hold GPUs for someone else (all_gpus_taken); KWOK runs them.
GPU_HOG_LABEL = "localcluster.kubeinfer.io/gpu-hog"
_HOG_IMAGE = "registry.k8s.io/pause:3.10"


def free_gpus(kube: KubeClient) -> dict[str, int]:
    """GPUs per node that no live pod requests (as the scheduler counts them)."""
    free = {
        node["metadata"]["name"]: int(node["status"].get("allocatable", {}).get(GPU_RESOURCE, 0))
        for node in kube.get("/api/v1/nodes")["items"]
    }
    for pod in kube.get("/api/v1/pods")["items"]:
        node = pod["spec"].get("nodeName")
        if node not in free or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"]["containers"]:
            requests = (container.get("resources") or {}).get("requests") or {}
            free[node] -= int(requests.get(GPU_RESOURCE, 0))
    return {name: count for name, count in free.items() if count > 0}


def take_free_gpus(kube: KubeClient, namespace: str, timeout: float = 60) -> int:
    """Let other pods (in namespace) request every free GPU, as another team's
    jobs would; return how many GPUs they took once all are scheduled.

    Raises WaitTimeoutError when they are not all scheduled in time."""
    taken = free_gpus(kube)
    for node, count in taken.items():
        kube.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "metadata": {"generateName": "gpu-hog-", "labels": {GPU_HOG_LABEL: "true"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": restricted_pod_security(),
                    "containers": [
                        {
                            "name": "hog",
                            "image": _HOG_IMAGE,
                            # Admitted in namespaces that enforce Pod Security "restricted".
                            "securityContext": restricted_container_security(),
                            "resources": {
                                "requests": {GPU_RESOURCE: str(count)},
                                "limits": {GPU_RESOURCE: str(count)},
                            },
                        }
                    ],
                },
            },
        )

    def all_placed() -> bool:
        hogs = kube.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={GPU_HOG_LABEL}")
        return all(p["spec"].get("nodeName") for p in hogs["items"])

    wait_for(all_placed, timeout, interval=0.2, what="the GPU-taking pods to be scheduled")
    return sum(taken.values())


def give_back_gpus(kube: KubeClient, namespace: str, timeout: float = 60) -> None:
    """Delete the pods of take_free_gpus and wait until they are gone."""
    path = f"/api/v1/namespaces/{namespace}/pods?labelSelector={GPU_HOG_LABEL}"
    for pod in kube.get(path)["items"]:
        kube.delete(
            f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}",
            {"gracePeriodSeconds": 0},
        )
    wait_for(lambda: not kube.get(path)["items"], timeout, interval=0.2, what="GPUs given back")
