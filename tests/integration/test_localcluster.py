"""The local cluster itself: real control plane, simulated GPU nodes, local runtime.

Pods whose image is one of ours run as local processes started by the
runtime; here their command is a tiny Python program (the real worker is
tested elsewhere), so these tests only depend on the cluster.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.localcluster.failures import admin_client, kill_pod, set_node_down
from kubeinfer.localcluster.procs import group_members
from kubeinfer.localcluster.runtime.records import read_records
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.topology import GPU_RESOURCE, NodeGroup, Topology
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api.constants import IMAGE_REPOSITORY_WORKER
from kubeinfer.operator.builders.common import (
    restricted_container_security,
    restricted_pod_security,
)

pytestmark = pytest.mark.cluster

OUR_IMAGE = f"{IMAGE_REPOSITORY_WORKER}:test"
FAKE_IMAGE = "registry.k8s.io/pause:3.10"  # any other image: KWOK fakes the pod
TOTAL_GPUS = 4 + 4 + 2  # the default topology

# Serves GET / with the pod's name on $KUBEINFER_BIND_HOST:8000.
HTTP_SERVER = textwrap.dedent(
    """
    import http.server, os
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["POD_NAME"].encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
    with open(os.environ["KUBEINFER_TERMINATION_LOG"], "w") as log:
        log.write(os.environ.get("LAST_WORDS", ""))
    http.server.HTTPServer((os.environ["KUBEINFER_BIND_HOST"], 8000), Handler).serve_forever()
    """
)


READINESS = {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1}


def runtime_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A pod of ours (worker image) whose process runs `script` in this interpreter."""
    container = {
        "name": "main",
        "image": OUR_IMAGE,
        "command": [sys.executable, "-c", script],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "securityContext": restricted_container_security(),
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            "securityContext": restricted_pod_security(),
            **spec,
        },
    }


def fake_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "main", "image": FAKE_IMAGE,
                 "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                 "securityContext": restricted_container_security()}
            ],
            "securityContext": restricted_pod_security(),
        },
    }  # fmt: skip


def get_pod(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}"))


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_pod(kube: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    pod = get_pod(kube, namespace, name)
    return pod if is_ready(pod) else None


def finished_status(kube: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The pod's status once it is Succeeded or Failed."""
    status = dict(get_pod(kube, namespace, name).get("status", {}))
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def create(kube: KubeClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    plural = {"Pod": "pods", "ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts"}
    return dict(kube.create(f"/api/v1/namespaces/{namespace}/{plural[obj['kind']]}", obj))


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def test_nodes_advertise_gpus(kube: KubeClient) -> None:
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json"))["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) >= {"gpu-h100-0", "gpu-h100-1", "gpu-a400-0"}
    h100 = by_name["gpu-h100-0"]
    assert h100["status"]["capacity"][GPU_RESOURCE] == "4"
    assert h100["status"]["allocatable"][GPU_RESOURCE] == "4"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81559"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.count"] == "4"
    a400 = by_name["gpu-a400-0"]
    assert a400["status"]["capacity"][GPU_RESOURCE] == "2"
    assert a400["metadata"]["labels"]["nvidia.com/gpu.memory"] == "4096"
    for node in by_name.values():
        assert node["spec"]["podCIDR"].startswith("127.")
        assert is_ready(node)
    table = kube.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product")
    assert "NVIDIA-RTX-A400" in table


async def test_kubernetes_asyncio_client_works(kube_api: Any) -> None:
    from kubernetes_asyncio import client

    nodes = await client.CoreV1Api(kube_api).list_node()
    assert len(nodes.items) >= 3


def test_gpu_pod_runs_and_answers_on_its_pod_ip(kube: KubeClient, namespace: str) -> None:
    pod = runtime_pod(
        "web",
        HTTP_SERVER,
        container={
            "resources": {"limits": {GPU_RESOURCE: "1"}},
            "readinessProbe": READINESS,
        },
    )
    create(kube, namespace, pod)
    running = wait_for(lambda: ready_pod(kube, namespace, "web"), 30, what="pod web Ready")
    assert running["status"]["phase"] == "Running"
    pod_ip = running["status"]["podIP"]
    assert pod_ip.startswith("127.")
    assert pod_ip != "127.0.0.1"
    assert running["spec"]["nodeName"].startswith("gpu-")
    status = running["status"]["containerStatuses"][0]
    assert status["ready"]
    assert status["started"]
    assert "running" in status["state"]
    assert http_get(f"http://{pod_ip}:8000/") == "web"


def test_pod_without_free_gpu_stays_pending(kube: KubeClient, namespace: str) -> None:
    # Fill every GPU with KWOK pods (4 + 4 + 2), then ask for one more.
    for i, gpus in enumerate((4, 4, 2)):
        create(kube, namespace, fake_pod(f"fill-{i}", gpus))
    for i in range(3):
        wait_for(
            lambda i=i: is_ready(get_pod(kube, namespace, f"fill-{i}")),  # type: ignore[misc]
            30,
            what=f"fill-{i} Ready",
        )
    create(kube, namespace, fake_pod("one-too-many", 1))

    def unschedulable() -> dict[str, Any] | None:
        pod = get_pod(kube, namespace, "one-too-many")
        for condition in pod.get("status", {}).get("conditions") or []:
            if condition["type"] == "PodScheduled" and condition["reason"] == "Unschedulable":
                return dict(condition)
        return None

    condition = wait_for(unschedulable, 30, what="one-too-many Unschedulable")
    assert "nvidia.com/gpu" in condition["message"]
    assert get_pod(kube, namespace, "one-too-many")["status"]["phase"] == "Pending"


def test_deleting_an_owner_collects_its_children(kube: KubeClient, namespace: str) -> None:
    owner = create(kube, namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "owner"}})  # fmt: skip
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                 "uid": owner["metadata"]["uid"]}  # fmt: skip
    child = {"name": "child", "ownerReferences": [reference]}
    create(kube, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": child})
    kube.delete(f"/api/v1/namespaces/{namespace}/configmaps/owner")
    wait_for(
        lambda: not kube.exists(f"/api/v1/namespaces/{namespace}/configmaps/child"),
        30,
        what="the garbage collector to delete the child",
    )


def test_deployment_gets_ready_pods(kube: KubeClient, namespace: str) -> None:
    labels = {"app": "demo"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "main", "image": FAKE_IMAGE,
                                    "securityContext": restricted_container_security()}],
                    "securityContext": restricted_pod_security(),
                },
            },
        },
    }
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    kube.create(path, deployment)
    wait_for(
        lambda: kube.get(f"{path}/demo").get("status", {}).get("readyReplicas") == 3,
        30,
        what="3 ready replicas",
    )
    kube.delete(f"{path}/demo")
    wait_for(
        lambda: not kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"],
        30,
        what="the Deployment's pods to be garbage-collected",
    )


# Calls the API with the pod's kubeconfig and leaves "<status> <status>" (secrets, pods).
API_CALLER = textwrap.dedent(
    """
    import json, os, ssl, urllib.error, urllib.request, yaml
    config = yaml.safe_load(open(os.environ["KUBECONFIG"]))
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    namespace = config["contexts"][0]["context"]["namespace"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    def status(path):
        request = urllib.request.Request(
            cluster["server"] + path, headers={"Authorization": "Bearer " + user["token"]})
        try:
            return urllib.request.urlopen(request, context=context).status
        except urllib.error.HTTPError as error:
            return error.code
    result = [status(f"/api/v1/namespaces/{namespace}/{kind}") for kind in ("secrets", "pods")]
    with open(os.environ["KUBEINFER_TERMINATION_LOG"], "w") as log:
        log.write(" ".join(map(str, result)))
    """
)


def test_service_account_rbac_applies_to_pod_processes(kube: KubeClient, namespace: str) -> None:
    create(kube, namespace, {"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "pod-reader"}})  # fmt: skip
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    kube.create(f"{rbac}/roles", {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    })  # fmt: skip
    kube.create(f"{rbac}/rolebindings", {
        "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "pod-reader", "namespace": namespace}],
    })  # fmt: skip
    pod = runtime_pod("caller", API_CALLER, serviceAccountName="pod-reader", restartPolicy="Never")
    create(kube, namespace, pod)

    status = wait_for(lambda: finished_status(kube, namespace, "caller"), 30, what="caller ended")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Succeeded", terminated
    # Secrets are not granted (403); listing pods is (200).
    assert terminated["message"] == "403 200"


def test_killed_process_shows_in_pod_status(
    kube: KubeClient, namespace: str, local_cluster: ClusterState
) -> None:
    pod = runtime_pod(
        "victim",
        HTTP_SERVER,
        container={
            "env": [
                {"name": "POD_NAME", "value": "victim"},
                {"name": "LAST_WORDS", "value": "simulated: CUDA error: out of memory"},
            ],
            # Ready only once it serves, i.e. after it wrote its last words.
            "readinessProbe": READINESS,
        },
    )
    create(kube, namespace, pod)
    wait_for(lambda: is_ready(get_pod(kube, namespace, "victim")), 30, what="victim Ready")
    killed = kill_pod(Path(local_cluster.root), namespace, "victim")
    assert [r.container for r in killed] == ["main"]

    def restarted() -> dict[str, Any] | None:
        statuses = get_pod(kube, namespace, "victim")["status"]["containerStatuses"]
        return dict(statuses[0]) if statuses[0]["restartCount"] >= 1 else None

    status = wait_for(restarted, 30, what="victim restarted")
    last = status["lastState"]["terminated"]
    assert last["exitCode"] == 137
    assert last["reason"] == "Error"
    assert last["message"] == "simulated: CUDA error: out of memory"
    wait_for(lambda: is_ready(get_pod(kube, namespace, "victim")), 30, what="victim Ready again")


def test_exit_code_and_no_restart_with_restart_policy_never(
    kube: KubeClient, namespace: str
) -> None:
    script = (
        "import os, sys\n"
        "open(os.environ['KUBEINFER_TERMINATION_LOG'], 'w').write('GPU lost')\n"
        "sys.exit(3)\n"
    )
    create(kube, namespace, runtime_pod("crash", script, restartPolicy="Never"))
    status = wait_for(lambda: finished_status(kube, namespace, "crash"), 30, what="crash ended")
    assert status["phase"] == "Failed"
    container = status["containerStatuses"][0]
    assert container["restartCount"] == 0
    assert container["state"]["terminated"]["exitCode"] == 3
    assert container["state"]["terminated"]["message"] == "GPU lost"


def test_env_from_secret_and_configmap(kube: KubeClient, namespace: str) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/secrets",
                {"metadata": {"name": "hub"}, "stringData": {"token": "s3cret"}})  # fmt: skip
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps",
                {"metadata": {"name": "cfg"}, "data": {"model": "tiny"}})  # fmt: skip
    script = (
        "import os\n"
        "open(os.environ['KUBEINFER_TERMINATION_LOG'], 'w').write(' '.join(\n"
        "    os.environ[k]\n"
        "    for k in ('TOKEN', 'MODEL', 'NS', 'NODE', 'IP', 'KUBEINFER_BIND_HOST')))\n"
    )
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}},
        {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "model"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    create(kube, namespace,
           runtime_pod("env", script, restartPolicy="Never", container={"env": env}))  # fmt: skip
    status = wait_for(lambda: finished_status(kube, namespace, "env"), 30, what="env ended")
    words = status["containerStatuses"][0]["state"]["terminated"]["message"].split()
    assert words[:3] == ["s3cret", "tiny", namespace]
    assert words[3] == get_pod(kube, namespace, "env")["spec"]["nodeName"]
    assert words[4] == words[5] == status["podIP"]


def test_deleting_a_pod_stops_its_process(
    kube: KubeClient, namespace: str, local_cluster: ClusterState
) -> None:
    create(kube, namespace, runtime_pod("short", HTTP_SERVER))
    wait_for(lambda: is_ready(get_pod(kube, namespace, "short")), 30, what="short Ready")
    runtime_dir = Path(local_cluster.root) / "runtime"
    (record,) = [r for r in read_records(runtime_dir) if r.namespace == namespace]
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/short")
    wait_for(
        lambda: not kube.exists(f"/api/v1/namespaces/{namespace}/pods/short"),
        30,
        what="the pod object to be gone",
    )
    assert group_members(record.pid) == []


def test_node_down_marks_node_not_ready(kube: KubeClient, local_cluster: ClusterState) -> None:
    root = Path(local_cluster.root)

    def ready(name: str) -> bool:
        return is_ready(kube.get(f"/api/v1/nodes/{name}"))

    set_node_down(root, "gpu-a400-0", down=True)
    try:
        wait_for(lambda: not ready("gpu-a400-0"), 30, what="gpu-a400-0 NotReady")
    finally:
        set_node_down(root, "gpu-a400-0", down=False)
    wait_for(lambda: ready("gpu-a400-0"), 30, what="gpu-a400-0 Ready again")


def test_validating_admission_policy_is_enforced(kube: KubeClient, namespace: str) -> None:
    policy_name = f"deny-forbidden-{namespace}"
    admission = "/apis/admissionregistration.k8s.io/v1"
    kube.create(f"{admission}/validatingadmissionpolicies", {
        "metadata": {"name": policy_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "!has(object.data) || !('forbidden' in object.data)",
                             "message": "forbidden key"}],
        },
    })  # fmt: skip
    kube.create(f"{admission}/validatingadmissionpolicybindings", {
        "metadata": {"name": policy_name},
        "spec": {"policyName": policy_name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}},
    })  # fmt: skip
    try:

        def rejected() -> str | None:
            name = f"cm-{len(rejected_attempts)}"
            rejected_attempts.append(name)
            try:
                kube.create(f"/api/v1/namespaces/{namespace}/configmaps",
                            {"metadata": {"name": name}, "data": {"forbidden": "1"}})  # fmt: skip
            except KubeError as error:
                return error.message
            return None

        rejected_attempts: list[str] = []
        message = wait_for(rejected, 30, interval=0.5, what="the policy to reject a ConfigMap")
        assert "forbidden key" in message
    finally:
        kube.delete(f"{admission}/validatingadmissionpolicybindings/{policy_name}")
        kube.delete(f"{admission}/validatingadmissionpolicies/{policy_name}")


def test_no_process_left_after_cluster_down() -> None:
    """A second, small cluster: start it, run a pod of ours, stop it, look for leftovers."""
    root = Path(tempfile.mkdtemp(prefix="kubeinfer-cluster-down-"))
    topology = root / "topology.yaml"
    small = Topology(nodes=[NodeGroup(name="solo", count=1)])
    topology.write_text(json.dumps(small.model_dump(by_alias=True)))
    state = controlplane.up(root, topology_path=topology, progress=lambda _: None,
                            tie_to_parent=True)  # fmt: skip
    try:
        kube = admin_client(root)
        create(kube, "default", runtime_pod("web", HTTP_SERVER))
        wait_for(lambda: is_ready(get_pod(kube, "default", "web")), 30, what="web Ready")
        pod_groups = [r.pid for r in read_records(root / "runtime")]
        assert pod_groups
    finally:
        controlplane.down(root, progress=lambda _: None)
    for pgid in [c.pid for c in state.components] + pod_groups:
        assert group_members(pgid) == [], f"process group {pgid} still has processes"
