"""The stage: a local cluster with enough simulated GPUs, the CRD, the
operator's least-privilege identity, and the operator itself as a process
pinned to one core."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubeinfer.localcluster.procs import spawn, stop_group
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.crdgen import build_crd
from kubeinfer.operator.rbac import (
    OPERATOR_NAME,
    operator_cluster_role,
    operator_cluster_role_binding,
)

OPERATOR_NAMESPACE = "kubeinfer-system"
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


def _apply(kube: KubeClient, obj: Mapping[str, Any]) -> None:
    kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(obj)
    )


def install_operator_identity(state: ClusterState, out: Path) -> Path:
    """The CRD, a ServiceAccount bound to the operator's ClusterRole, and a
    kubeconfig with its token: the operator runs with production RBAC."""
    kube = admin_client(Path(state.root))
    _apply(kube, build_crd())
    wait_for(
        lambda: kube.exists(f"/apis/{c.API_VERSION}/{c.PLURAL}"),
        30,
        what="the InferenceService CRD to be served",
    )
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_NAME, "namespace": OPERATOR_NAMESPACE},
        },
        operator_cluster_role(),
        operator_cluster_role_binding(OPERATOR_NAMESPACE),
    ):
        _apply(kube, obj)
    token = kube.create(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_NAME}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        },
    )["status"]["token"]
    config = build_kubeconfig(
        state.server, Path(state.root) / "pki" / "ca.crt", user=OPERATOR_NAME, token=token
    )
    return write_kubeconfig(out, config)


def create_namespace(kube: KubeClient, name: str) -> None:
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    # The ServiceAccount admission plugin rejects pods until this exists.
    wait_for(
        lambda: kube.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        30,
        what=f"the default ServiceAccount in {name}",
    )


@dataclass
class OperatorProcess:
    """`kubeinfer-operator` as a real process, pinned to one CPU."""

    kubeconfig: Path
    log: Path
    cpu: str
    health_port: int
    metrics_port: int
    resync_seconds: float | None = None
    process: subprocess.Popen[bytes] | None = None
    # How much log there was when the stop began: kopf's warnings about
    # cancelled daemons on shutdown are not what the counts are about.
    log_size_at_stop: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("kubeinfer-operator", path=str(Path(sys.executable).parent))
        if binary is None:
            raise RuntimeError("kubeinfer-operator is not installed in this virtualenv")
        argv = [binary, "--health-port", str(self.health_port)]
        argv += ["--metrics-port", str(self.metrics_port)]
        if self.resync_seconds is not None:
            argv += ["--resync-seconds", str(self.resync_seconds)]
        if shutil.which("taskset"):
            # taskset execs the operator: the pid stays the operator's.
            argv = ["taskset", "-c", self.cpu, *argv]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), c.ENV_BIND_HOST: "127.0.0.1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.process = spawn(argv, log_path=self.log, env=env, tie_to_parent=True)
        wait_for(self._healthy, timeout, interval=0.1, what="the operator's /healthz")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited; log {self.log}:\n{self.tail()}")
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        """The operator's own Prometheus metrics (reconciles and their time)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.log_size_at_stop = self.log.stat().st_size
        # SIGTERM, then SIGKILL after the grace period.
        stop_group(self.process.pid, grace_seconds=15, poll=self.process.poll)
        self.process.wait(10)

    def log_counts(self) -> dict[str, int]:
        """Warnings and errors the operator logged (retries, conflicts) before its stop.

        kopf warns each time it cancels a daemon, which it does whenever an
        InferenceService is deleted; those are counted apart."""
        counts = {"WARNING": 0, "ERROR": 0, "daemon cancelled": 0}
        try:
            text = self.log.read_bytes()[: self.log_size_at_stop].decode(errors="replace")
        except OSError:
            return counts
        for line in text.splitlines():
            if "is cancelled. Will escalate." in line:
                counts["daemon cancelled"] += 1
            elif " WARNING " in line:
                counts["WARNING"] += 1
            elif " ERROR " in line:
                counts["ERROR"] += 1
        return counts
