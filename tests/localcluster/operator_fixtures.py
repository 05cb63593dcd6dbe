"""pytest fixtures that run the operator on the local cluster, as in production.

- `operator_identity` (session): the CRD, plus a ServiceAccount bound to
  exactly the ClusterRole from kubeinfer.operator.rbac, and a kubeconfig
  with a real token of that ServiceAccount: RBAC is enforced as in a
  cluster, so a missing permission fails the tests.
- `running_operator` (session): `kubeinfer-operator` as a real process with
  that identity; tests may kill and restart it (`.restart()`).
- helpers to apply, read and wait on InferenceServices and to find router pods.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import GiveUpError, wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.crdgen import build_crd
from kubeinfer.operator.rbac import (
    OPERATOR_NAME,
    operator_cluster_role,
    operator_cluster_role_binding,
)

OPERATOR_NAMESPACE = "kubeinfer-system"


def isvc_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL}"
    return f"{path}/{name}" if name else path


def _apply(kube: KubeClient, obj: dict[str, Any]) -> None:
    kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(obj)
    )


@pytest.fixture(scope="session")
def operator_identity(
    local_cluster: ClusterState, kube: KubeClient, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig for the operator's ServiceAccount (least-privilege RBAC)."""
    _apply(kube, build_crd())
    wait_for(
        lambda: kube.exists(f"/apis/{c.API_VERSION}/{c.PLURAL}"),
        30,
        what="the InferenceService CRD to be served",
    )
    _apply(
        kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    )
    _apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_NAME, "namespace": OPERATOR_NAMESPACE},
        },
    )
    _apply(kube, operator_cluster_role())
    _apply(kube, operator_cluster_role_binding(OPERATOR_NAMESPACE))
    token = kube.create(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_NAME}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        },
    )["status"]["token"]
    root = Path(local_cluster.root)
    config = build_kubeconfig(
        local_cluster.server, root / "pki" / "ca.crt", user=OPERATOR_NAME, token=token
    )
    return write_kubeconfig(tmp_path_factory.mktemp("operator") / "kubeconfig", config)


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    health_port: int = 0

    def start(self) -> None:
        binary = shutil.which("kubeinfer-operator", path=str(Path(sys.executable).parent))
        assert binary, "kubeinfer-operator is not installed in this virtualenv"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), c.ENV_BIND_HOST: "127.0.0.1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.health_port = free_port()
        ports = ["--health-port", str(self.health_port), "--metrics-port", str(free_port())]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "--resync-seconds", "2", *ports],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._healthy, 60, interval=0.2, what="the operator's /healthz")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise GiveUpError(f"the operator exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def running_operator(
    operator_identity: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    handle = OperatorProcess(
        operator_identity, tmp_path_factory.mktemp("operator-log") / "operator.log"
    )
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        sys.stderr.write(f"\n[operator] log: {handle.log}\n")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both_dicts else value
    return out


def simulated_service(name: str, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    """An InferenceService on the simulated engine, quick to roll out;
    ``spec`` sections are merged in (nested dicts deeply)."""
    base: dict[str, Any] = {
        "model": {"name": "sim-model", "source": "simulated/sim-1b"},
        "replicas": replicas,
        "routing": {"routerReplicas": 1},
        "rollout": {
            "steps": [50, 100],
            "stepIntervalSeconds": 2,
            "maxSurge": 1,
            "analysis": {"minRequests": 5},
        },
        "worker": {
            "engine": "simulated",
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "simulator": {"ttftMs": 2, "tpotMs": 1},
            "drainSeconds": 3,
        },
    }
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": _merge(base, spec),
    }


def apply_isvc(kube: KubeClient, namespace: str, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))


def get_isvc(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.get(isvc_path(namespace, name))
    return result


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_condition(
    kube: KubeClient,
    namespace: str,
    name: str,
    kind: str,
    status: str = "True",
    timeout: float = 60,
    reason: str | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = condition(get_isvc(kube, namespace, name), kind)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return cond
        return None

    return wait_for(check, timeout, interval=0.2, what=f"{kind}={status} on {namespace}/{name}")


def worker_pods(kube: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"{c.LABEL_SERVICE}={name},{c.LABEL_COMPONENT}={c.COMPONENT_WORKER}"
    items: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def router_url(kube: KubeClient, namespace: str, name: str, timeout: float = 60) -> str:
    """The base URL of a ready router pod (pod IPs are loopback addresses here)."""
    selector = f"{c.LABEL_SERVICE}={name},{c.LABEL_COMPONENT}={c.COMPONENT_ROUTER}"

    def ready_ip() -> str | None:
        for pod in kube.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")[
            "items"
        ]:
            ready = any(
                cond["type"] == "Ready" and cond["status"] == "True"
                for cond in (pod.get("status") or {}).get("conditions") or []
            )
            if ready and pod["status"].get("podIP"):
                return str(pod["status"]["podIP"])
        return None

    ip = wait_for(ready_ip, timeout, interval=0.2, what=f"a ready router of {namespace}/{name}")
    return f"http://{ip}:{c.ROUTER_HTTP_PORT}"
