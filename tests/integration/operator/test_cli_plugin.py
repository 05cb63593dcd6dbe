"""`kubectl kubeinfer gpus|preview|top|status` on the local control plane.

One InferenceService (pinned to the A400 node, 2 GPUs, so that "beyond
the free GPUs" costs one extra worker, not eight) is shared by the tests
of this module, in order: the preview of the fresh service is checked
against where its pod lands; a canary whose model does not fit; a
scale-up beyond the free GPUs; `top --once` against the router's own
numbers under load; the inventory after a GPU fault and its replacement.
Every command runs as a ServiceAccount bound to the read-only
`kubeinfer-viewer` ClusterRole (TokenRequest token, own kubeconfig); one
with fewer rights is told which permission it lacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    get_isvc,
    router_url,
    simulated_service,
    wait_condition,
    worker_pods,
)
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.rbac import viewer_cluster_role

pytestmark = pytest.mark.cluster

A400 = "NVIDIA-RTX-A400"
BIN = Path(sys.executable).parent
NAME = "chat"


@dataclass
class Cli:
    """Runs the plugin as a given user (a kubeconfig of its own)."""

    kubectl: Path
    kubeconfig: Path
    namespace: str

    def run(self, *args: str, via_kubectl: bool = False, stdin: str | None = None) -> Any:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        command = (
            [str(self.kubectl), "kubeinfer", *args]
            if via_kubectl
            else [str(BIN / "kubectl-kubeinfer"), *args]
        )
        return subprocess.run(
            command, env=env, input=stdin, capture_output=True, text=True, timeout=60
        )

    def json(self, *args: str, **kw: Any) -> Any:
        done = self.run(*args, "-o", "json", **kw)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _token_kubeconfig(
    kube: KubeClient, state: ClusterState, namespace: str, account: str, folder: Path
) -> Path:
    kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"metadata": {"name": account}},
    )
    token = kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    config = build_kubeconfig(
        state.server,
        Path(state.root) / "pki" / "ca.crt",
        user=account,
        token=token,
        namespace=namespace,
    )
    return write_kubeconfig(folder / f"{account}.kubeconfig", config)


def _bind(kube: KubeClient, role: str, namespace: str, account: str) -> None:
    kube.kubectl(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{namespace}-{account}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            }
        ),
    )


@dataclass
class Shared:
    namespace: str
    viewer: Cli
    partial: Cli
    admin: Cli
    fresh_preview: dict[str, Any]
    spec: dict[str, Any]


def _service() -> dict[str, Any]:
    return simulated_service(
        NAME,
        replicas=1,
        gpu={"product": A400},
        rollout={"maxSurge": 1, "analysis": {"minRequests": 1000}},
        worker={"simulator": {"ttftMs": 2, "tpotMs": 2}},
    )


@pytest.fixture(scope="module")
def shared(
    local_cluster: ClusterState,
    kube: KubeClient,
    running_operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shared]:
    namespace = f"t-cli-{uuid.uuid4().hex[:6]}"
    folder = tmp_path_factory.mktemp("cli")
    kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    wait_for(
        lambda: kube.exists(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
        30,
        what="the default ServiceAccount",
    )
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(viewer_cluster_role()))
    partial_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubeinfer-test-partial"},
        # Lists InferenceServices and pods, nothing else: no nodes, no proxy.
        "rules": [
            {"apiGroups": [c.GROUP], "resources": [c.PLURAL], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        ],
    }
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(partial_role))
    viewer_config = _token_kubeconfig(kube, local_cluster, namespace, "viewer", folder)
    _bind(kube, "kubeinfer-viewer", namespace, "viewer")
    partial_config = _token_kubeconfig(kube, local_cluster, namespace, "partial", folder)
    _bind(kube, "kubeinfer-test-partial", namespace, "partial")
    kubectl = Path(local_cluster.kubectl)
    viewer = Cli(kubectl, viewer_config, namespace)
    admin = Cli(kubectl, Path(local_cluster.kubeconfig), namespace)
    spec = _service()
    spec["metadata"]["namespace"] = namespace
    # 1. Preview the fresh service (as the read-only user), then apply it.
    fresh = viewer.json("preview", "-f", "-", stdin=yaml.safe_dump(spec))
    apply_isvc(kube, namespace, spec)
    wait_condition(kube, namespace, NAME, "Ready", timeout=90)
    try:
        yield Shared(namespace, viewer, Cli(kubectl, partial_config, namespace), admin, fresh, spec)
    finally:
        for binding in ("viewer", "partial"):
            kube.delete(
                f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{namespace}-{binding}"
            )
        kube.delete(f"/api/v1/namespaces/{namespace}/pods")
        kube.delete(f"/api/v1/namespaces/{namespace}")
        wait_for(
            lambda: not kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"],
            60,
            what=f"the pods of {namespace} to be gone",
        )


def _all_worker_pods(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    """Terminating ones too: they hold their GPU until they are gone."""
    selector = f"{c.LABEL_SERVICE}={NAME},{c.LABEL_COMPONENT}={c.COMPONENT_WORKER}"
    items: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    )["items"]
    return items


def _gpus_on(kube: KubeClient) -> dict[str, int]:
    """GPUs requested by live pods, per node, counted independently of the CLI."""
    held: dict[str, int] = {}
    for pod in kube.get("/api/v1/pods")["items"]:
        node = pod["spec"].get("nodeName")
        if not node or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for ct in pod["spec"]["containers"]:
            held[node] = held.get(node, 0) + int(
                ((ct.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0)
            )
    return held


def test_fresh_preview_matches_where_the_pod_lands(shared: Shared, kube: KubeClient) -> None:
    p = shared.fresh_preview
    assert not p["exists"]
    assert p["validation"].startswith("checked by kubeinfer's own validation")
    # The read-only user may not dry-run: the message names the permission.
    assert 'cannot patch resource "inferenceservices"' in p["validation"]
    assert [pod["nodes"] for pod in p["pods"]] == [["gpu-a400-0"]]
    (pod,) = worker_pods(kube, shared.namespace, NAME)
    assert pod["metadata"]["name"] == p["pods"][0]["pod"]
    assert pod["spec"]["nodeName"] == "gpu-a400-0"
    assert pod["metadata"]["labels"][c.LABEL_REVISION] == p["revision"]


def test_isolation_pinned_by_node_affinity_lands_where_preview_said(
    shared: Shared, kube: KubeClient
) -> None:
    pinned = simulated_service(
        "alone",
        replicas=1,
        gpu={
            "placement": "isolation",
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "nvidia.com/gpu.memory",
                                    "operator": "Gt",
                                    "values": ["40000"],
                                }
                            ]
                        }
                    ]
                }
            },
        },
        rollout={"maxSurge": 0},
    )
    pinned["metadata"]["namespace"] = shared.namespace
    p = shared.viewer.json("preview", "-f", "-", stdin=yaml.safe_dump(pinned))
    (pod_preview,) = p["pods"]
    busy = {n for n, held in _gpus_on(kube).items() if held}
    # An H100 node (the affinity) with no other kubeinfer worker (isolation).
    assert pod_preview["nodes"]
    assert set(pod_preview["nodes"]) <= {"gpu-h100-0", "gpu-h100-1"} - busy
    apply_isvc(kube, shared.namespace, pinned)
    try:
        pod = wait_for(
            lambda: next(
                (
                    q
                    for q in worker_pods(kube, shared.namespace, "alone")
                    if q["spec"].get("nodeName")
                ),
                None,
            ),
            60,
            interval=0.3,
            what="the isolated worker to be scheduled",
        )
        assert pod["spec"]["nodeName"] in pod_preview["nodes"]
        # Nothing else of kubeinfer may join it there: the placement model
        # (and the scheduler) refuse a worker of another service on that node.
        other = shared.viewer.json(
            "preview", "--from-cluster", NAME, "--set", "spec.gpu.product=NVIDIA-H100-80GB-HBM3"
        )
        assert pod["spec"]["nodeName"] not in other["pods"][0]["nodes"]
    finally:
        kube.kubectl("delete", "-n", shared.namespace, "infsvc", "alone", "--wait=false")
        wait_for(
            lambda: (
                not kube.get(
                    f"/api/v1/namespaces/{shared.namespace}/pods?labelSelector={c.LABEL_SERVICE}=alone"
                )["items"]
            ),
            60,
            interval=0.3,
            what="the isolated service's pods to be gone",
        )


def test_invalid_file_gets_the_api_servers_message(shared: Shared) -> None:
    bad = json.loads(json.dumps(shared.spec))
    bad["spec"]["replicas"] = -1
    done = shared.admin.run("preview", "-f", "-", stdin=yaml.safe_dump(bad), via_kubectl=True)
    assert done.returncode == 1
    assert "Error from server (Invalid)" in done.stderr
    assert "spec.replicas in body should be greater than or equal to 0" in done.stderr
    # As the reader, kubeinfer's own validation speaks, and says why.
    done = shared.viewer.run("preview", "-f", "-", stdin=yaml.safe_dump(bad))
    assert done.returncode == 1
    assert "replicas" in done.stderr
    assert 'cannot patch resource "inferenceservices"' in done.stderr


def test_gpus_inventory_matches_nodes_and_pods(shared: Shared, kube: KubeClient) -> None:
    def reported() -> dict[str, Any] | None:
        inventory = shared.viewer.json("gpus", via_kubectl=True)
        rows = {r["node"]: r for r in inventory["nodes"]}
        mine = [w for w in rows["gpu-a400-0"]["workers"] if w["namespace"] == shared.namespace]
        return rows if mine and mine[0]["health"] == "Healthy" and mine[0]["gpuUUID"] else None

    rows = wait_for(reported, 30, interval=0.5, what="the worker's GPU report in status")
    nodes = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes")["items"]}
    assert set(rows) == set(nodes)
    held = _gpus_on(kube)
    for name, node in nodes.items():
        labels = node["metadata"]["labels"]
        row = rows[name]
        assert row["product"] == labels["nvidia.com/gpu.product"]
        assert row["memoryMiB"] == int(labels["nvidia.com/gpu.memory"])
        compute = (
            f"{labels['nvidia.com/gpu.compute.major']}.{labels['nvidia.com/gpu.compute.minor']}"
        )
        assert row["computeCapability"] == compute
        assert row["allocatable"] == int(node["status"]["allocatable"]["nvidia.com/gpu"])
        assert row["allocated"] == held.get(name, 0)
    (pod,) = worker_pods(kube, shared.namespace, NAME)
    (worker,) = [w for w in rows["gpu-a400-0"]["workers"] if w["namespace"] == shared.namespace]
    assert worker["pod"] == pod["metadata"]["name"]
    assert worker["inferenceService"] == NAME
    assert worker["revision"] == pod["metadata"]["labels"][c.LABEL_REVISION]
    assert worker["replica"] == 0
    assert worker["gpuUUID"].startswith("GPU-")
    assert worker["memoryMiB"] > 0
    # The human table has the same node and pod.
    text = shared.viewer.run("gpus").stdout
    assert "gpu-a400-0" in text
    assert pod["metadata"]["name"] in text


def test_missing_permission_is_named(shared: Shared) -> None:
    done = shared.partial.run("gpus")
    assert done.returncode == 1
    assert 'cannot list resource "nodes"' in done.stderr
    done = shared.partial.run("top", NAME, "--once")
    assert done.returncode == 1
    assert 'cannot get resource "pods/proxy"' in done.stderr
    done = shared.viewer.run("top", "no-such-service", "--once")
    assert done.returncode == 1
    assert '"no-such-service" not found' in done.stderr


def test_preview_canary_with_a_model_that_does_not_fit(shared: Shared, kube: KubeClient) -> None:
    p = shared.viewer.json(
        "preview", "--from-cluster", NAME, "--set", "spec.model.source=simulated/sim-7b"
    )
    assert p["newRevision"]
    assert p["changed"] == ["spec.model.source"]
    assert [(s["weight"], s["canaryPods"], s["stablePods"]) for s in p["steps"]] == [
        (50, 1, 1),
        (100, 1, 1),  # the stable pod goes when the canary is promoted
    ]
    fit = [w for w in p["warnings"] if w.startswith("model needs")]
    assert fit
    assert "NVIDIA-RTX-A400 has 4 GiB" in fit[0]
    assert [pod["nodes"] for pod in p["pods"]] == [["gpu-a400-0"]]
    before = json.loads(json.dumps(get_isvc(kube, shared.namespace, NAME)["spec"]))
    kube.kubectl(
        "patch",
        "-n",
        shared.namespace,
        "infsvc",
        NAME,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"model": {"source": "simulated/sim-7b"}}}),
    )

    def canary() -> dict[str, Any] | None:
        status = get_isvc(kube, shared.namespace, NAME).get("status") or {}
        pods = [
            pod
            for pod in worker_pods(kube, shared.namespace, NAME)
            if pod["metadata"]["labels"][c.LABEL_REVISION] == p["revision"]
            and pod["spec"].get("nodeName")
        ]
        return status if status.get("canaryRevision") == p["revision"] and pods else None

    status = wait_for(canary, 60, interval=0.3, what="the canary the preview announced")
    assert fit[0] in status["warnings"]
    (pod,) = [
        pod
        for pod in worker_pods(kube, shared.namespace, NAME)
        if pod["metadata"]["labels"][c.LABEL_REVISION] == p["revision"]
    ]
    assert pod["metadata"]["name"] == p["pods"][0]["pod"]
    assert pod["spec"]["nodeName"] in p["pods"][0]["nodes"]
    # Back to the stable revision: the canary goes away.
    kube.kubectl(
        "patch",
        "-n",
        shared.namespace,
        "infsvc",
        NAME,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"model": before["model"]}}),
    )
    wait_for(
        lambda: (
            len(_all_worker_pods(kube, shared.namespace)) == 1
            and not (get_isvc(kube, shared.namespace, NAME)["status"].get("canaryRevision"))
        ),
        60,
        interval=0.3,
        what="the canary to be gone",
    )


def test_preview_scale_up_beyond_the_free_gpus(shared: Shared, kube: KubeClient) -> None:
    p = shared.viewer.json("preview", "--from-cluster", NAME, "--set", "spec.replicas=3")
    assert not p["newRevision"]
    assert p["rollout"].startswith("in place")
    assert sorted(pod["nodes"] for pod in p["pods"]) == [[], ["gpu-a400-0"]]
    assert "no free nvidia.com/gpu (2/2 allocated)" in p["pods"][1]["whyNot"]
    assert any("1 of 2 new worker pod(s) cannot be placed now" in w for w in p["warnings"])
    kube.kubectl(
        "patch",
        "-n",
        shared.namespace,
        "infsvc",
        NAME,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 3}}),
    )

    def settled() -> tuple[list[str], list[str]] | None:
        pods = {pod["metadata"]["name"]: pod for pod in worker_pods(kube, shared.namespace, NAME)}
        new = [pods[x["pod"]] for x in p["pods"] if x["pod"] in pods]
        if len(new) != len(p["pods"]):
            return None
        placed = [pod["spec"]["nodeName"] for pod in new if pod["spec"].get("nodeName")]
        pending = [
            cond.get("message", "")
            for pod in new
            for cond in pod["status"].get("conditions") or []
            if cond.get("reason") == "Unschedulable"
        ]
        return (placed, pending) if len(placed) + len(pending) == len(new) else None

    # Both are created at once; which of them gets the last GPU is the
    # scheduler's choice, how many is what the preview said.
    placed, pending = wait_for(settled, 60, interval=0.3, what="the new pods placed or Pending")
    assert placed == ["gpu-a400-0"]
    assert len(pending) == 1
    assert "Insufficient nvidia.com/gpu" in pending[0]
    kube.kubectl(
        "patch",
        "-n",
        shared.namespace,
        "infsvc",
        NAME,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 1}}),
    )
    wait_for(
        lambda: len(_all_worker_pods(kube, shared.namespace)) == 1,
        60,
        interval=0.3,
        what="the service back at one replica",
    )


def _complete(base: str, results: list[int]) -> None:
    request = urllib.request.Request(
        f"{base}/v1/completions",
        data=json.dumps({"model": "sim-model", "prompt": "hi", "max_tokens": 100}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        results.append(answer.status)


def test_top_once_matches_the_routers_numbers_under_load(shared: Shared, kube: KubeClient) -> None:
    base = router_url(kube, shared.namespace, NAME)
    results: list[int] = []
    sent = 80

    def load() -> None:
        for _ in range(sent // 4):
            _complete(base, results)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    # While requests run, top sees them in flight, with their age.
    busy = wait_for(
        lambda: next(
            (
                w
                for w in shared.viewer.json("top", NAME, "--once")["workers"]
                if w["inFlight"] > 0 and (w["oldestRunningSeconds"] or 0) > 0
            ),
            None,
        ),
        30,
        interval=0.1,
        what="a worker with requests in flight in top",
    )
    assert busy["weight"] == 100
    for thread in threads:
        thread.join(60)
    assert results == [200] * sent
    with urllib.request.urlopen(f"{base}/debug/backends", timeout=5) as answer:
        direct = json.loads(answer.read())
    top = shared.viewer.json("top", NAME, "--once", via_kubectl=True)["workers"]
    by_pod = {b["name"]: b for b in direct["backends"]}
    assert {w["pod"] for w in top} == set(by_pod)
    for worker in top:
        backend = by_pod[worker["pod"]]
        window = backend["window"]
        assert worker["inFlight"] == backend["inFlight"] == 0
        assert worker["requests"] == window["requests"]
        assert worker["requests"] >= sent
        assert worker["p50LatencyMs"] == window["p50LatencyMs"]
        assert worker["p99LatencyMs"] == window["p99LatencyMs"]
        assert worker["p50TtftMs"] == window["p50TtftMs"]
        assert worker["requestsPerSecond"] == pytest.approx(
            window["requests"] / window["seconds"], rel=0.1
        )
        assert worker["gpuMemoryMiB"] == backend["gpu"]["memoryTotalBytes"] // 2**20
        assert worker["gpuMemoryUsedMiB"] == backend["gpu"]["memoryUsedBytes"] // 2**20
    text = shared.viewer.run("top", NAME, "--once").stdout
    assert text.splitlines()[0].split()[:3] == ["INFERENCESERVICE", "WORKER", "REVISION"]


def test_inventory_after_a_gpu_fault_and_replacement(shared: Shared, kube: KubeClient) -> None:
    (old,) = worker_pods(kube, shared.namespace, NAME)
    agent = f"http://{old['status']['podIP']}:{c.WORKER_AGENT_PORT}/admin/faults"
    request = urllib.request.Request(
        agent,
        data=json.dumps({"gpuFault": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200

    def replaced() -> dict[str, Any] | None:
        rows = {r["node"]: r for r in shared.viewer.json("gpus")["nodes"]}
        row = rows["gpu-a400-0"]
        mine = [w for w in row["workers"] if w["namespace"] == shared.namespace]
        fresh = [
            w for w in mine if w["pod"] != old["metadata"]["name"] and w["health"] == "Healthy"
        ]
        return row if fresh and row["lastFault"] else None

    row = wait_for(replaced, 90, interval=0.5, what="the replacement, healthy, in the inventory")
    assert old["metadata"]["name"] in row["lastFault"]
    assert "GPU" in row["lastFault"]
    faults = get_isvc(kube, shared.namespace, NAME)["status"]["gpuFaults"]
    assert faults[-1]["pod"] == old["metadata"]["name"]
    assert faults[-1]["node"] == "gpu-a400-0"
    # `status` shows it too, to the reader.
    text = shared.viewer.run("status", NAME).stdout
    assert "Placement:  spread" in text
