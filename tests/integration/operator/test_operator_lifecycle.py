"""The operator on the real local control plane: create, serve, heal, scale, delete.

The operator runs as a real process with a ServiceAccount bound to exactly
the ClusterRole of kubeinfer.operator.rbac; workers (simulated engine) and
routers run as real processes started by the local runtime for the pods
the scheduler placed.
"""

import json
import re
import secrets
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import kill_pod, set_node_down
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    get_isvc,
    isvc_path,
    router_url,
    simulated_service,
    wait_condition,
    worker_pods,
)
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.debugbackends import DebugBackends
from kubeinfer.operator.api.routing import RoutingTable, routes_configmap_name
from kubeinfer.operator.api.spec import Strategy

pytestmark = pytest.mark.cluster


def complete(base: str, n: int = 1, api_key: str | None = None) -> list[int]:
    codes = []
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    for _ in range(n):
        request = urllib.request.Request(
            f"{base}/v1/completions",
            data=json.dumps({"model": "sim-model", "prompt": "hello", "max_tokens": 4}).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                codes.append(answer.status)
        except urllib.error.HTTPError as error:
            codes.append(error.code)
    return codes


def test_apply_serves_through_the_router(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    # Clients must send the key in the Secret; the router balances with the
    # `weighted` strategy (every worker weight 1: an even split).
    key = secrets.token_urlsafe(24)
    kube.kubectl(
        "create", "secret", "generic", "chat-key", f"--from-literal=token={key}", "-n", namespace
    )
    routing = {"strategy": "weighted", "apiKeySecretRef": {"name": "chat-key"}}
    apply_isvc(kube, namespace, simulated_service("chat", replicas=2, routing=routing))
    # `kubectl wait` works on the Ready condition.
    kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=90s", "infsvc/chat")
    obj = get_isvc(kube, namespace, "chat")
    status = obj["status"]
    assert status["readyText"] == "2/2"
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    rows = status["replicaStatuses"]
    assert {r["gpuProduct"] for r in rows} <= {"NVIDIA-H100-80GB-HBM3", "NVIDIA-RTX-A400"}
    assert all(r["ready"] and r["node"] for r in rows)
    pods = worker_pods(kube, namespace, "chat")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["podIP"].startswith("127.")
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # Requests go through the router to the simulated workers, with the key only.
    base = router_url(kube, namespace, "chat")
    assert complete(base, 2) == [401] * 2
    assert complete(base, 2, api_key=key[:-1]) == [401] * 2
    assert complete(base, 10, api_key=key) == [200] * 10
    # Only the Secret holds the key: the router reads it from a secretKeyRef,
    # and neither its Deployment nor its routing table carries the value.
    deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/chat-router")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": c.ENV_API_KEY,
        "valueFrom": {"secretKeyRef": {"name": "chat-key", "key": "token"}},
    } in env
    routes = kube.get(f"/api/v1/namespaces/{namespace}/configmaps/{routes_configmap_name('chat')}")
    assert key not in json.dumps(deployment) + json.dumps(routes)
    (table,) = [RoutingTable.model_validate_json(text) for text in routes["data"].values()]
    assert table.strategy is Strategy.WEIGHTED
    # Ten requests one after the other: five to each worker.
    with urllib.request.urlopen(f"{base}/debug/backends", timeout=10) as answer:
        backends = DebugBackends.model_validate_json(answer.read()).backends
    assert sorted(b.requests for b in backends) == [5, 5], backends
    printed = kube.kubectl("get", "infsvc", "-n", namespace)
    assert printed.split("\n")[0].split() == [
        "NAME",
        "READY",
        "REPLICAS",
        "DESIRED",
        "CANARY",
        "STRATEGY",
        "PHASE",
        "SCALING",
        "AGE",
    ]


def test_killed_worker_comes_back_into_rotation(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    apply_isvc(kube, namespace, simulated_service("heal", replicas=2))
    wait_condition(kube, namespace, "heal", "Ready", timeout=90)
    victim = worker_pods(kube, namespace, "heal")[0]["metadata"]["name"]
    kill_pod(Path(local_cluster.root), namespace, victim, sig=signal.SIGKILL)
    # The kill shows in the pod and takes it out of the ready count ...
    wait_for(
        lambda: any(
            (cs.get("restartCount") or 0) >= 1
            for p in worker_pods(kube, namespace, "heal")
            for cs in p["status"].get("containerStatuses") or []
        ),
        30,
        what="the restart of the killed worker",
    )
    # ... and it comes back ready, in rotation, with everything answering.
    wait_condition(kube, namespace, "heal", "Ready", timeout=60)
    assert complete(router_url(kube, namespace, "heal"), 10) == [200] * 10


def test_gpu_fault_replaces_the_pod_and_says_why(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    body = simulated_service(
        "faulty", replicas=1, worker={"simulator": {"gpuFaultAfterRequests": 3}}
    )
    apply_isvc(kube, namespace, body)
    wait_condition(kube, namespace, "faulty", "Ready", timeout=90)
    (first,) = [p["metadata"]["name"] for p in worker_pods(kube, namespace, "faulty")]
    complete(router_url(kube, namespace, "faulty"), 4)

    def replaced() -> list[str] | None:
        names = [p["metadata"]["name"] for p in worker_pods(kube, namespace, "faulty")]
        return names if names and first not in names else None

    (second,) = wait_for(replaced, 30, what="a replacement pod with a new name")

    # Events are posted in the background after the status write: poll.
    def replacing_event() -> list[tuple[str, str]] | None:
        events = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        found = [
            (e["reason"], e["message"])
            for e in events
            if e["involvedObject"]["name"] == "faulty" and e["reason"] == "ReplacingPod"
        ]
        return found or None

    reasons = wait_for(replacing_event, 30, what="the ReplacingPod event")
    assert any("GPU" in m and "Xid" in m for _, m in reasons), reasons
    replacement = kube.get(f"/api/v1/namespaces/{namespace}/pods/{second}")
    annotations = replacement["metadata"]["annotations"]
    assert annotations[c.ANNOTATION_REPLACES] == first
    assert annotations[c.ANNOTATION_FAILURES] == "1"
    wait_condition(kube, namespace, "faulty", "Ready", timeout=60)


def test_crash_looping_worker_is_replaced_and_says_why(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    # Every engine exits after its first request: the container restarts
    # (back-off 1 s, 2 s, 4 s) until the operator calls it a crash loop.
    body = simulated_service("loop", replicas=1, worker={"simulator": {"crashAfterRequests": 1}})
    apply_isvc(kube, namespace, body)
    base = router_url(kube, namespace, "loop", timeout=90)
    (first,) = [p["metadata"]["name"] for p in worker_pods(kube, namespace, "loop")]

    def replaced() -> list[str] | None:
        # One request per round: it is what makes the engine exit again.
        complete(base, 1)
        names = [p["metadata"]["name"] for p in worker_pods(kube, namespace, "loop")]
        return names if names and first not in names else None

    (second,) = wait_for(replaced, 90, interval=0.5, what="the crash-looping pod replaced")

    def replacing_event() -> list[str] | None:
        events = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        found = [
            e["message"]
            for e in events
            if e["involvedObject"]["name"] == "loop" and e["reason"] == "ReplacingPod"
        ]
        return found or None

    messages = wait_for(replacing_event, 30, what="the ReplacingPod event")
    # At least 3 restarts (the rule), and the engine's own exit reason.
    crash = re.compile(rf"^{first}: crash loop \((\d+) restarts\): .+")
    found = [m for m in messages if (match := crash.match(m)) and int(match[1]) >= 3]
    assert found, messages
    replacement = kube.get(f"/api/v1/namespaces/{namespace}/pods/{second}")
    annotations = replacement["metadata"]["annotations"]
    assert annotations[c.ANNOTATION_REPLACES] == first
    assert annotations[c.ANNOTATION_FAILURES] == "1"


def test_scale_up_and_down_through_the_scale_subresource(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    apply_isvc(kube, namespace, simulated_service("elastic", replicas=1))
    wait_condition(kube, namespace, "elastic", "Ready", timeout=90)
    kube.kubectl("scale", "-n", namespace, "infsvc/elastic", "--replicas=3")
    wait_for(
        lambda: get_isvc(kube, namespace, "elastic")["status"].get("readyText") == "3/3",
        90,
        what="three ready replicas",
    )
    scale = kube.get(isvc_path(namespace, "elastic") + "/scale")
    assert scale["status"]["replicas"] == 3
    assert "kubeinfer.io/service=elastic" in scale["status"]["selector"]
    kube.kubectl("scale", "-n", namespace, "infsvc/elastic", "--replicas=1")
    wait_for(
        lambda: len(worker_pods(kube, namespace, "elastic")) == 1, 60, what="scale down to one pod"
    )
    remaining = worker_pods(kube, namespace, "elastic")[0]
    assert remaining["metadata"]["labels"]["kubeinfer.io/replica"] == "0"
    wait_condition(kube, namespace, "elastic", "Ready", timeout=30)


def test_not_enough_gpus_is_degraded_with_counts(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    # The A400 node has 2 GPUs; ask for 3 of them.
    apply_isvc(
        kube, namespace, simulated_service("greedy", replicas=3, gpu={"product": "NVIDIA-RTX-A400"})
    )
    cond = wait_condition(
        kube, namespace, "greedy", "Degraded", reason="InsufficientGPU", timeout=60
    )
    assert cond["message"].startswith("1 of 3 worker pods cannot be scheduled")
    assert "nvidia.com/gpu" in cond["message"] or "node" in cond["message"]


def test_model_too_big_for_the_gpu_is_a_warning(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    body = simulated_service("huge", replicas=1, gpu={"product": "NVIDIA-RTX-A400"})
    body["spec"]["model"]["vramGiB"] = 20
    apply_isvc(kube, namespace, body)
    warnings = wait_for(
        lambda: (get_isvc(kube, namespace, "huge").get("status") or {}).get("warnings"),
        30,
        what="a VRAM warning",
    )
    assert warnings[0].startswith("model needs ~20.0 GiB, GPU NVIDIA-RTX-A400 has 4 GiB")


def test_invalid_spec_is_rejected_by_the_api_server(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    body = simulated_service("bad", replicas=2, rollout={"steps": [50, 25, 100]})
    with pytest.raises(subprocess.CalledProcessError) as caught:
        apply_isvc(kube, namespace, body)
    assert "rollout.steps must be strictly ascending" in caught.value.stderr
    body = simulated_service("bad", replicas=1, rollout={"maxSurge": 4})
    with pytest.raises(subprocess.CalledProcessError) as caught:
        apply_isvc(kube, namespace, body)
    assert "rollout.maxSurge must not exceed replicas" in caught.value.stderr


def test_delete_garbage_collects_everything(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    apply_isvc(kube, namespace, simulated_service("doomed", replicas=1))
    wait_condition(kube, namespace, "doomed", "Ready", timeout=90)
    kube.kubectl("delete", "-n", namespace, "infsvc/doomed", "--wait=false")

    def leftovers() -> list[str]:
        found = []
        for path in ("pods", "configmaps", "services", "serviceaccounts"):
            for item in kube.get(f"/api/v1/namespaces/{namespace}/{path}")["items"]:
                labels = item["metadata"].get("labels") or {}
                if labels.get("kubeinfer.io/service") == "doomed" and not item["metadata"].get(
                    "deletionTimestamp"
                ):
                    found.append(f"{path}/{item['metadata']['name']}")
        for item in kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]:
            found.append(f"deployments/{item['metadata']['name']}")
        return found

    wait_for(lambda: leftovers() == [], 60, what="all children of doomed to be deleted")
    assert not kube.exists(isvc_path(namespace, "doomed"))


def test_pods_on_a_lost_node_move_to_other_nodes(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    apply_isvc(
        kube,
        namespace,
        simulated_service("mover", replicas=2, gpu={"product": "NVIDIA-H100-80GB-HBM3"}),
    )
    wait_condition(kube, namespace, "mover", "Ready", timeout=90)
    lost = worker_pods(kube, namespace, "mover")[0]
    node = lost["spec"]["nodeName"]
    set_node_down(Path(local_cluster.root), node, True)
    try:

        def moved() -> bool:
            pods = worker_pods(kube, namespace, "mover")
            names = {p["metadata"]["name"] for p in pods}
            return lost["metadata"]["name"] not in names and len(pods) == 2

        wait_for(moved, 60, what=f"the pod on {node} to be replaced")
        replacement = next(
            p
            for p in worker_pods(kube, namespace, "mover")
            if p["metadata"].get("annotations", {}).get(c.ANNOTATION_REPLACES)
            == lost["metadata"]["name"]
        )
        wait_condition(kube, namespace, "mover", "Ready", timeout=60)
        placed = kube.get(f"/api/v1/namespaces/{namespace}/pods/{replacement['metadata']['name']}")
        assert placed["spec"]["nodeName"] != node
    finally:
        set_node_down(Path(local_cluster.root), node, False)

    # Later tests place pods on this node again: wait until it is back.
    def back() -> bool:
        conditions = kube.get(f"/api/v1/nodes/{node}")["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(back, 30, what=f"{node} Ready again")
