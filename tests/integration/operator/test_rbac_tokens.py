"""RBAC proven on the API server with real ServiceAccount tokens.

The operator's identity is what the Helm chart ships (ServiceAccount,
ClusterRole from kubeinfer.operator.rbac, binding, and the spec guard
admission policy), applied as the chart renders it; the router's is what
the operator creates for each InferenceService (its builders). Tokens come
from the TokenRequest API, and every row of the matrix is one real request
whose status is asserted: a rule too wide or too narrow fails the test.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from charthelpers import render_chart
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import apply_object, isvc_path, simulated_service
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.api.routing import routes_configmap_name
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.builders.common import (
    Images,
    restricted_container_security,
    restricted_pod_security,
)
from kubeinfer.operator.builders.router import (
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service_account,
)
from kubeinfer.operator.builders.worker import build_worker_pod
from kubeinfer.operator.rbac import SPEC_GUARD_MESSAGE

pytestmark = pytest.mark.cluster

MERGE = "application/merge-patch+json"
ISVC = "svc"
_RBAC = "/apis/rbac.authorization.k8s.io/v1"
_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
CLUSTER_SCOPED = {
    "ClusterRole": f"{_RBAC}/clusterroles",
    "ClusterRoleBinding": f"{_RBAC}/clusterrolebindings",
    "ValidatingAdmissionPolicy": f"{_ADMISSION}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{_ADMISSION}/validatingadmissionpolicybindings",
}


class Caller:
    """Raw requests with one bearer token; answers (status, message)."""

    def __init__(self, server: str, ca: Path, token: str) -> None:
        self.server = server
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca))

    def __call__(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, str]:
        request = urllib.request.Request(
            self.server + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as answer:
                return answer.status, ""
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                return error.code, str(json.loads(text).get("message", text))
            except ValueError:
                return error.code, text


def token_for(kube: KubeClient, namespace: str, account: str) -> str:
    answer = kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 600}},
    )  # fmt: skip
    return str(answer["status"]["token"])


def check(call: Caller, who: str, rows: list[tuple[str, str, Any, int]]) -> None:
    """Every row at once, so that a failure lists every wrong answer."""
    wrong = []
    for method, path, body, expected in rows:
        content_type = MERGE if method == "PATCH" else "application/json"
        status, message = call(method, path, body, content_type)
        ok = 200 <= status < 300 if expected == 200 else status == expected
        if not ok:
            wrong.append(f"{method} {path}: {status} (expected {expected}) {message[:200]}")
    assert not wrong, f"as {who}:\n" + "\n".join(wrong)


def compliant_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "securityContext": restricted_pod_security(),
            "containers": [
                {
                    "name": "c",
                    "image": "example.com/x:1",
                    "securityContext": restricted_container_security(),
                }
            ],
        },
    }


@pytest.fixture
def service(kube: KubeClient, namespace: str, operator_identity: Path) -> dict[str, Any]:
    """An InferenceService (replicas 0), a Secret and a ConfigMap, made by the admin."""
    kube.create(isvc_path(namespace), simulated_service(ISVC, replicas=0))
    kube.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "hf-token"}, "stringData": {"token": "x"}},
    )
    kube.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "unrelated"}, "data": {"a": "b"}},
    )
    return dict(kube.get(isvc_path(namespace, ISVC)))


@pytest.fixture
def chart_operator(kube: KubeClient, namespace: str) -> Iterator[str]:
    """The chart's operator identity installed in ``namespace``; its token."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    objects = render_chart(release, namespace)
    installed = []
    try:
        for obj in objects:
            kind = obj["kind"]
            if kind in CLUSTER_SCOPED:
                kube.create(CLUSTER_SCOPED[kind], obj)
                installed.append(f"{CLUSTER_SCOPED[kind]}/{obj['metadata']['name']}")
            elif kind == "ServiceAccount":
                kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", obj)
                account = obj["metadata"]["name"]
        assert {p.rsplit("/", 2)[-2] for p in installed} == {
            "clusterroles",
            "clusterrolebindings",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        }
        yield token_for(kube, namespace, account)
    finally:
        for path in installed:
            kube.delete(path)


def test_operator_token_can_do_its_job_and_nothing_more(
    kube: KubeClient,
    local_cluster: ClusterState,
    namespace: str,
    service: dict[str, Any],
    chart_operator: str,
) -> None:
    call = Caller(kube.server, Path(local_cluster.root) / "pki" / "ca.crt", chart_operator)
    ns = f"/api/v1/namespaces/{namespace}"
    isvc = isvc_path(namespace, ISVC)
    node = kube.get("/api/v1/nodes")["items"][0]["metadata"]["name"]
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    # RBAC reaches the authorizer's cache within moments; poll for the first grant.
    wait_for(lambda: call("GET", f"{ns}/pods")[0] == 200, 30, what="the operator's grants")
    # The spec guard policy compiles asynchronously: wait until it refuses.
    spec_patch = {"spec": {"replicas": 3}}

    def guarded() -> str | None:
        status, message = call("PATCH", isvc, spec_patch, MERGE)
        if status == 200:  # not active yet: undo, as the admin, and try again
            kube.merge_patch(isvc, {"spec": {"replicas": 0}})
            return None
        return f"{status} {message}"

    refusal = wait_for(guarded, 30, interval=0.3, what="the spec guard to refuse a spec patch")
    assert refusal.startswith("403"), refusal
    assert SPEC_GUARD_MESSAGE in refusal, refusal

    check(call, "the operator", [
        # What it needs.
        ("GET", f"/apis/{c.API_VERSION}/{c.PLURAL}", None, 200),
        ("GET", isvc, None, 200),
        ("PATCH", isvc, {"metadata": {"annotations": {f"{c.GROUP}/probe": "1"}}}, 200),
        ("PATCH", f"{isvc}/status", {"status": {"phase": "Pending"}}, 200),
        ("PATCH", f"{isvc}/scale", {"spec": {"replicas": 0}}, 200),
        ("GET", "/api/v1/pods", None, 200),
        ("POST", f"{ns}/pods?dryRun=All", compliant_pod("w"), 200),
        ("GET", "/api/v1/nodes", None, 200),
        ("POST", f"{ns}/configmaps?dryRun=All", {"metadata": {"name": "r"}}, 200),
        ("GET", "/apis/apps/v1/deployments", None, 200),
        ("POST", f"{ns}/events?dryRun=All", {"metadata": {"name": "e"},
                                             "involvedObject": {"namespace": namespace}}, 200),
        # Secrets: never (pods reference them; the kubelet reads them).
        ("GET", f"{ns}/secrets", None, 403),
        ("GET", f"{ns}/secrets/hf-token", None, 403),
        ("GET", "/api/v1/secrets", None, 403),
        ("POST", f"{ns}/secrets", {"metadata": {"name": "s"}}, 403),
        # InferenceServices: no create, replace or delete; the spec is the user's.
        ("PATCH", isvc, {"spec": {"replicas": 5}}, 403),
        ("PUT", isvc, service, 403),
        ("POST", isvc_path(namespace), {**service, "metadata": {"name": "x"}}, 403),
        ("DELETE", isvc, None, 403),
        # Nodes, namespaces, the CRD and cluster-wide RBAC: read at most.
        ("DELETE", f"/api/v1/nodes/{node}", None, 403),
        ("PATCH", f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}}, 403),
        ("POST", "/api/v1/namespaces", {"metadata": {"name": "x"}}, 403),
        ("DELETE", ns, None, 403),
        ("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c.PLURAL}.{c.GROUP}",
         None, 403),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "x"}},
         403),
        # Escalation: a Role beyond its own rules, a binding to cluster-admin.
        ("POST", f"{rbac}/roles", {"metadata": {"name": "x"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}, 403),
        ("POST", f"{rbac}/rolebindings", {"metadata": {"name": "x"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "cluster-admin"}, "subjects": [
            {"kind": "ServiceAccount", "name": "default", "namespace": namespace}]}, 403),
        # Into pods: no exec, logs, port-forward; no tokens for other accounts.
        ("POST", f"{ns}/pods/w/exec?command=sh", None, 403),
        ("GET", f"{ns}/pods/w/log", None, 403),
        ("POST", f"{ns}/serviceaccounts/default/token", {"spec": {}}, 403),
        ("POST", "/api/v1/persistentvolumes", {"metadata": {"name": "x"}}, 403),
    ])  # fmt: skip
    # The refused spec patch changed nothing.
    assert kube.get(isvc)["spec"]["replicas"] == 0


def test_router_token_reads_its_routing_table_only(
    kube: KubeClient, local_cluster: ClusterState, namespace: str, service: dict[str, Any]
) -> None:
    meta = ObjectMeta.model_validate(service["metadata"])
    for obj in (build_router_service_account(meta), build_router_role(meta),
                build_router_role_binding(meta)):  # fmt: skip
        apply_object(kube, obj)
    routes = routes_configmap_name(ISVC)
    apply_object(
        kube,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": routes, "namespace": namespace},
            "data": {},
        },
    )
    account = build_router_service_account(meta)["metadata"]["name"]
    call = Caller(
        kube.server,
        Path(local_cluster.root) / "pki" / "ca.crt",
        token_for(kube, namespace, account),
    )
    ns = f"/api/v1/namespaces/{namespace}"
    wait_for(
        lambda: call("GET", f"{ns}/configmaps/{routes}")[0] == 200, 30, what="the router's grant"
    )
    check(call, "a router", [
        ("GET", f"{ns}/configmaps/{routes}", None, 200),
        # How the router watches it: a list/watch narrowed to the one name.
        ("GET", f"{ns}/configmaps?fieldSelector=metadata.name%3D{routes}", None, 200),
        ("GET", f"{ns}/configmaps?fieldSelector=metadata.name%3D{routes}&watch=1"
                "&timeoutSeconds=1", None, 200),
        ("GET", f"{ns}/configmaps", None, 403),
        ("GET", f"{ns}/configmaps/unrelated", None, 403),
        ("PATCH", f"{ns}/configmaps/{routes}", {"data": {"x": "y"}}, 403),
        ("DELETE", f"{ns}/configmaps/{routes}", None, 403),
        ("GET", f"{ns}/secrets/hf-token", None, 403),
        ("GET", f"{ns}/pods", None, 403),
        ("GET", isvc_path(namespace, ISVC), None, 403),
        ("GET", f"/api/v1/namespaces/default/configmaps/{routes}", None, 403),
        ("GET", "/api/v1/nodes", None, 403),
    ])  # fmt: skip


def test_only_routers_get_a_token(
    kube: KubeClient, namespace: str, service: dict[str, Any]
) -> None:
    """Workers never call the API server: the ServiceAccount admission plugin
    mounts no token into them; routers (which watch their table) get one."""
    meta = ObjectMeta.model_validate(service["metadata"])
    spec = InferenceServiceSpec.model_validate(service["spec"])
    worker = build_worker_pod(meta, spec, revision="r", replica=0, images=Images())
    router = build_router_deployment(meta, spec, images=Images())["spec"]["template"]
    apply_object(kube, build_router_service_account(meta))

    def admitted(pod: dict[str, Any], name: str) -> list[str]:
        body = {"metadata": {"name": name}, "spec": pod["spec"]}
        out = kube.create(f"/api/v1/namespaces/{namespace}/pods?dryRun=All", body)
        return [v["name"] for v in out["spec"].get("volumes", []) if "projected" in v]

    assert admitted(worker, "worker") == []
    assert [v for v in admitted(router, "router") if v.startswith("kube-api-access-")]
