"""An API refusal that retrying can't fix (422: an admission policy refuses
the object; 403: a quota or a missing permission) becomes a Degraded
condition with the API server's words and one Warning event; the operator
backs off, and recovers once a person acts."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    condition,
    get_isvc,
    simulated_service,
    wait_condition,
)
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.builders.common import (
    restricted_container_security,
    restricted_pod_security,
)

pytestmark = pytest.mark.cluster
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
MESSAGE = "no GPU workers in this namespace (platform policy)"


@pytest.fixture
def worker_pods_denied(kube: KubeClient, namespace: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy that refuses worker pods in ``namespace``."""
    name = f"deny-workers-{namespace}"
    kube.create(f"{ADMISSION}/validatingadmissionpolicies", {
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pods"]}]},
            "validations": [{
                "expression": "!has(object.metadata.labels) || "
                "object.metadata.labels['app.kubernetes.io/component'] != 'worker'",
                "message": MESSAGE}],
        },
    })  # fmt: skip
    kube.create(f"{ADMISSION}/validatingadmissionpolicybindings", {
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}},
    })  # fmt: skip
    attempts: list[int] = []

    def refused() -> bool:
        attempts.append(1)
        pod = {
            "metadata": {"name": f"probe-{len(attempts)}",
                         "labels": {"app.kubernetes.io/component": "worker"}},
            # Pod Security "restricted" would refuse it first otherwise.
            "spec": {"containers": [{"name": "c", "image": "example.com/x:1",
                                     "securityContext": restricted_container_security()}],
                     "securityContext": restricted_pod_security()},
        }  # fmt: skip
        try:
            kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
        except KubeError as error:
            return MESSAGE in error.message
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
        return False

    wait_for(refused, 30, interval=0.5, what="the policy to refuse a worker pod")
    try:
        yield name
    finally:
        for kind in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
            if kube.exists(f"{ADMISSION}/{kind}/{name}"):  # the test may have lifted it
                kube.delete(f"{ADMISSION}/{kind}/{name}")


def test_refusal_is_reported_once_and_recovers(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, worker_pods_denied: str
) -> None:
    apply_isvc(kube, namespace, simulated_service("refused", replicas=1))

    def degraded() -> dict[str, str] | None:
        found = condition(get_isvc(kube, namespace, "refused"), "Degraded")
        # A ValidatingAdmissionPolicy denial is a 422.
        return found if found.get("reason") == "Invalid" else None

    found = wait_for(degraded, 60, what="Degraded: Invalid")
    assert found["status"] == "True"
    assert MESSAGE in found["message"]

    log = Path(running_operator.log)
    marker = f"{namespace}/refused: Invalid:"
    # Several refused passes later (2 s, 4 s, 8 s apart) ...
    wait_for(lambda: log.read_text().count(marker) >= 3, 60, what="three refused passes")
    events = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    forbidden = [
        e for e in events
        if e["involvedObject"].get("name") == "refused" and e["reason"] == "Invalid"
    ]  # fmt: skip
    # ... one event: it is news once.
    assert len(forbidden) == 1, forbidden
    assert forbidden[0]["type"] == "Warning"
    assert MESSAGE in forbidden[0]["message"]

    admission = f"{ADMISSION}/validatingadmissionpolicybindings/{worker_pods_denied}"
    kube.delete(admission)
    wait_for(lambda: not kube.exists(admission), 30, what="the binding to be gone")
    wait_condition(kube, namespace, "refused", "Ready", timeout=120)
    assert condition(get_isvc(kube, namespace, "refused"), "Degraded")["status"] == "False"
