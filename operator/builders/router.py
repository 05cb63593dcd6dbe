"""The router of one InferenceService: Deployment, Service, its identity and
the NetworkPolicy that lets only routers reach the workers."""

from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.api.routing import routes_configmap_name
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.builders.common import (
    Images,
    child_metadata,
    component_labels,
    field_env,
    restricted_container_security,
    restricted_pod_security,
    router_name,
    router_selector,
    scrape_annotations,
    secret_env,
    worker_selector,
)
from kubeinfer.operator.rbac import router_rules


def build_router_service_account(meta: ObjectMeta) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(
            meta, router_name(meta.name), component_labels(meta.name, c.COMPONENT_ROUTER)
        ),
        "automountServiceAccountToken": False,
    }


def build_router_role(meta: ObjectMeta) -> dict[str, Any]:
    """Routers may read exactly one ConfigMap: their routing table."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(
            meta, router_name(meta.name), component_labels(meta.name, c.COMPONENT_ROUTER)
        ),
        "rules": router_rules(routes_configmap_name(meta.name)),
    }


def build_router_role_binding(meta: ObjectMeta) -> dict[str, Any]:
    name = router_name(meta.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(meta, name, component_labels(meta.name, c.COMPONENT_ROUTER)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": meta.namespace}],
    }


def build_router_deployment(
    meta: ObjectMeta, spec: InferenceServiceSpec, *, images: Images
) -> dict[str, Any]:
    """Routers are stateless and interchangeable, so a Deployment fits."""
    labels = component_labels(meta.name, c.COMPONENT_ROUTER)
    routing = spec.routing
    env = [
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ]
    if routing.api_key_secret_ref is not None:
        ref = routing.api_key_secret_ref
        env.append(secret_env(c.ENV_API_KEY, ref.name, ref.key))
    resources = routing.router_resources
    container = {
        "name": "router",
        "image": images.router,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kubeinfer-router"],
        "args": [
            f"--watch={meta.namespace}/{routes_configmap_name(meta.name)}",
            f"--port={c.ROUTER_HTTP_PORT}",
            f"--processes={routing.router_processes}",
        ],
        "ports": [{"name": "http", "containerPort": c.ROUTER_HTTP_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": resources.cpu, "memory": resources.memory},
            "limits": {"memory": resources.memory},
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_container_security(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(meta, router_name(meta.name), labels),
        "spec": {
            "replicas": routing.router_replicas,
            "selector": {"matchLabels": router_selector(meta.name)},
            # Never fewer routers than asked while a new router version rolls out.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": scrape_annotations(c.ROUTER_HTTP_PORT),
                },
                "spec": {
                    "serviceAccountName": router_name(meta.name),
                    # Routers watch their routing table, so they need a token.
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod_security(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                    "tolerations": _node_loss_tolerations(),
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": router_selector(meta.name)},
                        }
                    ],
                },
            },
        },
    }


# A router holds no state: on a lost node it is better replaced after 30 s
# than after the 300 s Kubernetes gives every pod by default (the chaos
# suite's "node NotReady" scenario: the Deployment only recreates an evicted
# pod). Worker pods are replaced by the operator itself, at once.
ROUTER_NODE_LOSS_TOLERATION_SECONDS = 30


def _node_loss_tolerations() -> list[dict[str, Any]]:
    return [
        {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": ROUTER_NODE_LOSS_TOLERATION_SECONDS,
        }
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
    ]


def build_router_service(meta: ObjectMeta) -> dict[str, Any]:
    """The client-facing Service, named like the InferenceService
    (``http://NAME.NAMESPACE.svc``), as in KServe."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            meta, meta.name, component_labels(meta.name, c.COMPONENT_ROUTER)
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": router_selector(meta.name),
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def router_endpoint(meta: ObjectMeta) -> str:
    return f"http://{meta.name}.{meta.namespace}.svc"


def build_worker_network_policy(meta: ObjectMeta) -> dict[str, Any]:
    """Only this InferenceService's routers may reach its workers' engine
    and agent ports (kubelet probes are not subject to NetworkPolicy)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(
            meta, f"{meta.name}-workers", component_labels(meta.name, c.COMPONENT_WORKER)
        ),
        "spec": {
            "podSelector": {"matchLabels": worker_selector(meta.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": router_selector(meta.name)}}],
                    "ports": [
                        {"protocol": "TCP", "port": c.WORKER_HTTP_PORT},
                        {"protocol": "TCP", "port": c.WORKER_AGENT_PORT},
                    ],
                },
                {
                    # Prometheus (any namespace) scrapes the agent's
                    # /metrics; the engine's API port stays routers-only.
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {
                                "matchLabels": {c.LABEL_PROMETHEUS_NAME: c.PROMETHEUS_NAME}
                            },
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": c.WORKER_AGENT_PORT}],
                },
            ],
        },
    }
