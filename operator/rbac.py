"""Least-privilege RBAC, defined once.

The integration tests run the operator with a ServiceAccount token bound to
exactly ``operator_cluster_role()``, and the Helm chart renders the same
rules (``kubeinfer rbac`` prints them), so what is tested is what ships.
"""

from typing import Any

from kubeinfer.operator.api.constants import GROUP, PLURAL

OPERATOR_NAME = "kubeinfer-operator"
_CHILD = ["get", "list", "watch", "create", "update", "patch", "delete"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def operator_rules() -> list[dict[str, Any]]:
    """What the operator does, and nothing more:

    - reads InferenceServices and writes their status (never their spec,
      except `kubeinfer rollout undo`, which runs as the user), and their
      replicas through the scale subresource when autoscaling is on;
    - owns worker Pods, the router Deployment/Service/ServiceAccount/Role/
      RoleBinding, the routing-table ConfigMap and the NetworkPolicy;
    - reads Nodes (GPU labels, NotReady) and writes Events;
    - lists and watches CRDs (kopf follows its resource's definition).

    Granting the routers' Role requires holding its rules (Kubernetes
    prevents privilege escalation), which ``configmaps`` here covers.
    """
    return [
        _rule([GROUP], [PLURAL], ["get", "list", "watch", "patch"]),
        _rule([GROUP], [f"{PLURAL}/status"], ["get", "patch", "update"]),
        # The autoscaler sets replicas through the scale subresource only.
        _rule([GROUP], [f"{PLURAL}/scale"], ["get", "patch", "update"]),
        _rule([""], ["pods"], ["get", "list", "watch", "create", "delete", "patch"]),
        _rule([""], ["configmaps", "services", "serviceaccounts"], _CHILD),
        _rule(["apps"], ["deployments"], _CHILD),
        _rule(["rbac.authorization.k8s.io"], ["roles", "rolebindings"], _CHILD),
        _rule(["networking.k8s.io"], ["networkpolicies"], _CHILD),
        _rule([""], ["nodes"], ["get", "list", "watch"]),
        # kopf discovers and watches the CRD itself (to follow its changes).
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
        _rule([""], ["events"], ["create", "patch"]),
        _rule(["events.k8s.io"], ["events"], ["create", "patch"]),
    ]


def router_rules(routes_configmap: str) -> list[dict[str, Any]]:
    """A router reads one ConfigMap: its routing table (watched with a
    ``metadata.name`` field selector, which resourceNames authorizes)."""
    return [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [routes_configmap],
            "verbs": ["get", "list", "watch"],
        }
    ]


SPEC_GUARD_MESSAGE = (
    "the kubeinfer operator may not change an InferenceService's spec: it writes "
    "metadata, and status and replicas through their subresources"
)


def operator_spec_guard(
    namespace: str, service_account: str = OPERATOR_NAME, name: str = f"{OPERATOR_NAME}-spec-guard"
) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding: the operator's identity
    may not change an InferenceService's spec.

    RBAC can't say this: kopf needs ``patch`` on the object itself for its
    annotations and finalizer, and ``patch`` covers the spec too. The API
    server's own admission (CEL) closes the gap; the scale subresource,
    which the autoscaler uses, is a different resource and stays allowed.
    The Helm chart renders the same objects (templates/specguard.yaml).
    """
    username = f"system:serviceaccount:{namespace}:{service_account}"
    labels = {"app.kubernetes.io/name": "kubeinfer"}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": [PLURAL],
                    }
                ]
            },
            "matchConditions": [
                {"name": "operator", "expression": f"request.userInfo.username == '{username}'"}
            ],
            "validations": [
                {
                    "expression": "object.spec == oldObject.spec",
                    "message": SPEC_GUARD_MESSAGE,
                    "reason": "Forbidden",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return [policy, binding]


LEASE_NAME = "kubeinfer-operator"
LEADER_ELECTION_NAME = "kubeinfer-operator-leader-election"


def leader_election_rules(lease_name: str = LEASE_NAME) -> list[dict[str, Any]]:
    """Leader election (operator/leader.py), in the operator's own namespace:
    read and renew one Lease, by name. ``create`` cannot be limited to a
    name (the name is not known when a create is authorized), so it is
    granted alone; the Lease then exists and the rest is by name. Hand-over
    Events go through the ClusterRole's ``events``."""
    return [
        _rule(["coordination.k8s.io"], ["leases"], ["create"]),
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease_name],
            "verbs": ["get", "update"],
        },
    ]


def leader_election_role(
    namespace: str, name: str = LEADER_ELECTION_NAME, lease_name: str = LEASE_NAME
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "kubeinfer"},
        },
        "rules": leader_election_rules(lease_name),
    }


def leader_election_role_binding(
    namespace: str, service_account: str = OPERATOR_NAME, name: str = LEADER_ELECTION_NAME
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "kubeinfer"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


VIEWER_NAME = "kubeinfer-viewer"


def viewer_rules() -> list[dict[str, Any]]:
    """What `kubectl kubeinfer gpus|preview|top|status` need: reads only.

    ``pods/proxy`` with ``get`` lets `top` GET the routers' /debug/backends
    through the API server (a proxied GET needs ``get``, a POST ``create``).
    `preview` dry-runs with ``patch`` when the user has it; without it, it
    validates with kubeinfer's own models and says so.
    """
    return [
        _rule([GROUP], [PLURAL], ["get", "list", "watch"]),
        _rule([""], ["pods", "nodes"], ["get", "list", "watch"]),
        _rule([""], ["pods/proxy"], ["get"]),
    ]


def viewer_cluster_role(name: str = VIEWER_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubeinfer"}},
        "rules": viewer_rules(),
    }


def operator_cluster_role(name: str = OPERATOR_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubeinfer"}},
        "rules": operator_rules(),
    }


def operator_cluster_role_binding(
    namespace: str, service_account: str = OPERATOR_NAME, name: str = OPERATOR_NAME
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubeinfer"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
