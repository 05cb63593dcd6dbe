"""The operator on the local cluster, as in production; for tests, bench and the demo.

- `install_operator_identity`: the CRD, plus a ServiceAccount bound to
  exactly the ClusterRole from kubeinfer.operator.rbac, and a kubeconfig
  with a real token of that ServiceAccount: RBAC is enforced as in a
  cluster, so a missing permission fails.
- `OperatorProcess`: `kubeinfer-operator` as a real process with that
  identity (optionally pinned to a CPU); it can be killed and restarted;
  with ``leader_elect`` several of them elect one leader on a Lease, as the
  chart's replicas do (docs/ha.md).
- helpers to apply, read and wait on InferenceServices and to find router pods.

No pytest here: the fixtures built on it are in tests/plugins/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.procs import spawn, stop_group
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import GiveUpError, wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.crdgen import build_crd
from kubeinfer.operator.rbac import (
    LEASE_NAME,
    OPERATOR_NAME,
    leader_election_role,
    leader_election_role_binding,
    operator_cluster_role,
    operator_cluster_role_binding,
    operator_spec_guard,
)

OPERATOR_NAMESPACE = "kubeinfer-system"


def isvc_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL}"
    return f"{path}/{name}" if name else path


def apply_object(kube: KubeClient, obj: Mapping[str, Any]) -> None:
    """Server-side apply, as an admin."""
    kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(dict(obj))
    )


def install_operator_identity(kube: KubeClient, state: ClusterState, out: Path) -> Path:
    """The CRD and the operator's least-privilege identity; returns a
    kubeconfig (written to ``out``) with a token of its ServiceAccount."""
    apply_object(kube, build_crd())
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
        *operator_spec_guard(OPERATOR_NAMESPACE),
        leader_election_role(OPERATOR_NAMESPACE),
        leader_election_role_binding(OPERATOR_NAMESPACE),
    ):
        apply_object(kube, obj)
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


@dataclass
class OperatorProcess:
    """`kubeinfer-operator` as a real process (pinned to ``cpu`` if given)."""

    kubeconfig: Path
    log: Path
    resync_seconds: float | None = 2.0
    cpu: str | None = None
    health_port: int = 0  # 0: a free port at each start
    metrics_port: int = 0
    process: Any = None  # subprocess.Popen[bytes] once started
    # How much log there was when the stop began: kopf's warnings about
    # cancelled daemons on shutdown are not what log_counts is about.
    log_size_at_stop: int | None = None
    # Leader election (the chart's default): this candidate's identity; the
    # Lease is LEASE_NAME in OPERATOR_NAMESPACE, as the chart has it.
    leader_elect: bool = False
    identity: str | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return int(self.process.pid)

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("kubeinfer-operator", path=str(Path(sys.executable).parent))
        if binary is None:
            raise RuntimeError("kubeinfer-operator is not installed in this virtualenv")
        health = self.health_port or free_port()
        metrics = self.metrics_port or free_port()
        self.health_port, self.metrics_port = health, metrics
        argv = [binary, "--health-port", str(health), "--metrics-port", str(metrics)]
        if self.resync_seconds is not None:
            argv += ["--resync-seconds", str(self.resync_seconds)]
        if self.leader_elect:
            argv += ["--leader-elect", "--leader-election-namespace", OPERATOR_NAMESPACE]
            if self.identity:
                argv += ["--leader-election-identity", self.identity]
        if self.cpu is not None and shutil.which("taskset"):
            # taskset execs the operator: the pid stays the operator's.
            argv = ["taskset", "-c", self.cpu, *argv]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), c.ENV_BIND_HOST: "127.0.0.1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.process = spawn(argv, log_path=self.log, env=env, tie_to_parent=True)
        # Ready: kopf has started (a leader), or the Lease was read (a standby).
        wait_for(self._ready, timeout, interval=0.1, what="the operator's /readyz")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise GiveUpError(f"the operator exited; log {self.log}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=1
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def health(self, path: str = "/healthz") -> tuple[int, dict[str, str]]:
        """Status code and JSON body of /healthz or /readyz: role and identity."""
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return int(answer.status), json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read())

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the operator's /metrics (0 when absent)."""
        pattern = re.compile(rf"^{re.escape(name + labels)} (\S+)$", re.MULTILINE)
        found = pattern.search(self.metrics())
        return float(found.group(1)) if found else 0.0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str:
        """The operator's own Prometheus metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: alive but frozen, as in a long GC pause or a frozen VM."""
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.log_size_at_stop = self.log.stat().st_size
        stop_group(self.process.pid, grace_seconds=15, poll=self.process.poll)
        self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

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


def lease_holder(kube: KubeClient, name: str = LEASE_NAME) -> str | None:
    """Who holds the operator's leader-election Lease now (None: nobody)."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases/{name}"
    if not kube.exists(path):
        return None
    return kube.get(path).get("spec", {}).get("holderIdentity") or None


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
