"""Pod Security "restricted", enforced by the API server's own admission.

Every test namespace carries ``pod-security.kubernetes.io/enforce:
restricted`` (tests/plugins/cluster.py), so every operator test already
proves that the pods it creates are admitted. Here: the label provably has
effect (a non-compliant pod is refused), and every pod kubeinfer builds is
admitted: GPU worker, CPU worker, router, and the operator's own pod as the
Helm chart renders it (server-side dry-run creates: admission runs, nothing
is stored).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from charthelpers import chart_object, render_chart
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.router import build_router_deployment
from kubeinfer.operator.builders.worker import build_worker_pod

pytestmark = pytest.mark.cluster

REFUSED = 'violates PodSecurity "restricted:latest"'
COMPLIANT: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{
        "name": "c", "image": "example.com/x:1",
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }],
}  # fmt: skip


def dry_run_create(kube: KubeClient, namespace: str, pod: dict[str, Any]) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)


def as_pod(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": template["spec"]}  # fmt: skip


def _broken(change: str) -> dict[str, Any]:
    spec = copy.deepcopy(COMPLIANT)
    container = spec["containers"][0]
    if change == "no securityContext":
        spec.pop("securityContext")
        container.pop("securityContext")
    elif change == "root":
        spec["securityContext"]["runAsUser"] = 0
    elif change == "privilege escalation":
        container["securityContext"]["allowPrivilegeEscalation"] = True
    elif change == "capability":
        container["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    elif change == "hostPath":
        spec["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}]
    elif change == "hostNetwork":
        spec["hostNetwork"] = True
    elif change == "unconfined seccomp":
        spec["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    return spec


def test_the_namespace_refuses_non_compliant_pods(kube: KubeClient, namespace: str) -> None:
    labels = kube.get(f"/api/v1/namespaces/{namespace}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The control: the minimal compliant pod is admitted ...
    dry_run_create(kube, namespace, {"metadata": {"name": "ok"}, "spec": COMPLIANT})
    # ... and each single violation is refused, by the API server, with its reason.
    for change in ("no securityContext", "root", "privilege escalation", "capability",
                   "hostPath", "hostNetwork", "unconfined seccomp"):  # fmt: skip
        with pytest.raises(KubeError) as refused:
            dry_run_create(kube, namespace, {"metadata": {"name": "bad"}, "spec": _broken(change)})
        assert refused.value.status == 403, change
        assert REFUSED in refused.value.message, (change, refused.value.message)


def test_every_pod_kubeinfer_builds_is_admitted(kube: KubeClient, namespace: str) -> None:
    meta = ObjectMeta(name="svc", namespace=namespace, uid="0c9d1f3e-0000-4000-8000-000000000001")
    images = Images()
    gpu = InferenceServiceSpec.model_validate(
        {"model": {"name": "m", "source": "pvc://models/m", "secretRef": {"name": "hf"}}}
    )
    cpu = InferenceServiceSpec.model_validate(
        {"model": {"name": "m", "source": "org/m"}, "gpu": {"count": 0},
         "routing": {"apiKeySecretRef": {"name": "keys", "key": "k"}}})  # fmt: skip
    pods = {
        "gpu-worker": build_worker_pod(meta, gpu, revision="r1", replica=0, images=images),
        "cpu-worker": build_worker_pod(meta, cpu, revision="r1", replica=0, images=images),
        "router": as_pod(
            "router", build_router_deployment(meta, cpu, images=images)["spec"]["template"]
        ),
    }
    chart = render_chart("psa", namespace)
    pods["operator"] = as_pod("operator", chart_object(chart, "Deployment")["spec"]["template"])
    for name, pod in pods.items():
        pod = copy.deepcopy(pod)
        pod["metadata"] = {"name": f"dry-{name}"}
        account = pod["spec"].get("serviceAccountName")
        if account and not kube.exists(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}"):
            kube.create(
                f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": account}}
            )
        try:
            dry_run_create(kube, namespace, pod)
        except KubeError as error:
            pytest.fail(f"the {name} pod is refused in a restricted namespace: {error.message}")
