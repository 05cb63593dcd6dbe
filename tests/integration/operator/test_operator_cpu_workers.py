"""gpu.count 0 on the real control plane: the CPU worker pods the operator creates.

What the API server refuses with gpu.count 0 is in test_crd_on_apiserver.py.

The worker runs vLLM (engine vllm), which is not installed here: the test
checks the pods the operator creates and that the worker gets past every
GPU check, not vLLM itself.
"""

from typing import Any

import pytest
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    get_isvc,
    worker_pods,
)
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.builders.common import Images

pytestmark = pytest.mark.cluster


def cpu_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "qwen", "source": "Qwen/Qwen2.5-0.5B-Instruct"},
            "replicas": 2,
            "gpu": {"count": 0},
            "routing": {"routerReplicas": 1},
            "worker": {"engine": "vllm", "resources": {"cpu": "100m", "memory": "4Gi"}},
        },
    }


def termination_message(pod: dict[str, Any]) -> str | None:
    for status in pod["status"].get("containerStatuses") or []:
        for state in ("state", "lastState"):
            terminated = (status.get(state) or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"]).strip()
    return None


def test_cpu_workers_request_no_gpu_and_run_without_nvml(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    apply_isvc(kube, namespace, cpu_service("cpu"))

    def scheduled() -> list[dict[str, Any]] | None:
        pods = [p for p in worker_pods(kube, namespace, "cpu") if p["spec"].get("nodeName")]
        return pods if len(pods) >= 2 else None

    pods = wait_for(scheduled, 60, what="two scheduled CPU worker pods")
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        resources = container["resources"]
        assert resources["requests"] == {"cpu": "100m", "memory": "4Gi"}
        assert resources["limits"] == {"memory": "4Gi"}
        assert container["image"] == Images().worker_cpu
        assert "--device=cpu" in container["args"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[c.ENV_VLLM_CPU_KVCACHE_SPACE] == "1"  # (4 GiB - ~2.1 GiB model) / 2
        assert not any(t.get("key") == "nvidia.com/gpu" for t in pod["spec"].get("tolerations", []))
        assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # The local runtime runs the CPU image's worker with real vLLM on its
    # PATH: the worker gets past every GPU check and starts vLLM, which
    # then cannot fetch this hub model (offline) and says so.
    def first_exit() -> str | None:
        messages = [termination_message(p) for p in worker_pods(kube, namespace, "cpu")]
        return next((m for m in messages if m), None)

    message = wait_for(first_exit, 240, what="a CPU worker's termination message")
    assert message.startswith("cannot download the model Qwen/"), message
    assert "NVML" not in message

    # Every node here has GPUs; the CPU workers' rows still name none.
    def rows_with_nodes() -> list[dict[str, Any]] | None:
        rows = (get_isvc(kube, namespace, "cpu").get("status") or {}).get("replicaStatuses")
        return rows if rows and all(r.get("node") for r in rows) else None

    rows = wait_for(rows_with_nodes, 60, what="status rows with nodes")
    assert [r.get("gpuProduct") for r in rows] == [None] * len(rows)
