"""Names, labels and owner references shared by every builder.

Builders are pure: they take the parsed InferenceService (and whatever the
caller looked up) and return plain dicts; no API calls, no globals, no
environment reads.
"""

from dataclasses import dataclass
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta


@dataclass(frozen=True)
class Images:
    """The images the operator runs; chosen by whoever deploys the operator."""

    worker: str = f"{c.IMAGE_REPOSITORY_WORKER}:{c.DEFAULT_IMAGE_TAG}"
    # For InferenceServices with gpu.count 0: vLLM's CPU build.
    worker_cpu: str = f"{c.IMAGE_REPOSITORY_WORKER_CPU}:{c.DEFAULT_IMAGE_TAG}"
    router: str = f"{c.IMAGE_REPOSITORY_ROUTER}:{c.DEFAULT_IMAGE_TAG}"


def router_name(service: str) -> str:
    return f"{service}-router"


def component_labels(service: str, component: str) -> dict[str, str]:
    return {
        c.LABEL_NAME: "kubeinfer",
        c.LABEL_INSTANCE: service,
        c.LABEL_COMPONENT: component,
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: "kubeinfer",
        c.LABEL_SERVICE: service,
    }


def worker_selector(service: str) -> dict[str, str]:
    return {c.LABEL_SERVICE: service, c.LABEL_COMPONENT: c.COMPONENT_WORKER}


def router_selector(service: str) -> dict[str, str]:
    return {c.LABEL_SERVICE: service, c.LABEL_COMPONENT: c.COMPONENT_ROUTER}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def owner_reference(meta: ObjectMeta) -> dict[str, Any]:
    """Makes the InferenceService the controller of a child, so deleting it
    garbage-collects the child."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": meta.name,
        "uid": meta.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    meta: ObjectMeta, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "namespace": meta.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(meta)],
    }
    if annotations:
        out["annotations"] = annotations
    return out


def restricted_container_security() -> dict[str, Any]:
    """Pod Security Standards "restricted", plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security(uid: int = 1000) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def scrape_annotations(port: int) -> dict[str, str]:
    """prometheus.io/* annotations: the same port and path as the chart's PodMonitors."""
    return {
        c.ANNOTATION_SCRAPE: "true",
        c.ANNOTATION_SCRAPE_PORT: str(port),
        c.ANNOTATION_SCRAPE_PATH: c.METRICS_PATH,
    }
