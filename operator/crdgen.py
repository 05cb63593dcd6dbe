"""Generate the InferenceService CRD from the pydantic models.

The models are the single source of truth; ``crds/`` is written by
``kubeinfer crds`` and a unit test fails when the two drift apart.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural*
OpenAPI v3.0 subset: no ``$ref``, no ``anyOf`` for optionals (``nullable``
instead), ``exclusiveMinimum`` as a boolean, no titles.
"""

from pathlib import Path
from typing import Any

import yaml
from kubeinfer.operator.api.constants import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from kubeinfer.operator.api.spec import InferenceServiceSpec, cel
from kubeinfer.operator.api.status import InferenceServiceStatus

# Worker pod names are `<name>-<revision>-<replica>-<nonce>` and must stay
# within the 63-character DNS label limit of hostnames.
MAX_NAME_LENGTH = 40

_DROPPED_KEYS = ("title", "$defs", "discriminator")


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        out[key] = (
            value
            if key in ("default", "enum", "x-kubernetes-validations")
            else (_resolve(value, defs))
        )
    return _to_openapi(out)


def _to_openapi(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one resolved JSON Schema node into structural OpenAPI v3.0."""
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != len(node["anyOf"]) and len(variants) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                del rest["default"]
            node = {**variants[0], **rest, "nullable": True}
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[inclusive] = node[bound]
            node[bound] = True
    if node.get("type") == "object" and node.get("additionalProperties") is True:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "object" and node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "properties" in node:
        node["required"] = [r for r in node.get("required", []) if r in node["properties"]]
        if not node["required"]:
            del node["required"]
    return node


def openapi_schema(model: type[InferenceServiceSpec] | type[InferenceServiceStatus]) -> Any:
    """The structural OpenAPI v3 schema of one model."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(schema, schema.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object for InferenceService."""
    root: dict[str, Any] = {
        "type": "object",
        "description": (
            "InferenceService serves one model on N worker pods (one GPU each, or CPU only) "
            "behind a router."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": openapi_schema(InferenceServiceSpec),
            "status": openapi_schema(InferenceServiceStatus),
        },
        "x-kubernetes-validations": [
            cel(
                f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
                "(worker pod names are derived from it)",
            )
        ],
    }
    columns = [
        {"name": "Ready", "type": "string", "jsonPath": ".status.readyText"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {
            "name": "Desired",
            "type": "integer",
            "jsonPath": ".status.autoscaling.desiredReplicas",
            "description": "Replicas the autoscaler wants (spec.autoscaling).",
        },
        {
            "name": "Canary",
            "type": "integer",
            "jsonPath": ".status.canaryWeight",
            "description": "Percent of traffic on the canary revision.",
        },
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.routing.strategy"},
        {
            "name": "Load",
            "type": "number",
            "jsonPath": ".status.autoscaling.signals.perReplica",
            "description": "Requests in flight and waiting per ready worker.",
            "priority": 1,
        },
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {
            "name": "Scaling",
            "type": "string",
            "jsonPath": ".status.autoscaling.reason",
            "description": "Why the autoscaler wants that many (Steady, StabilizingDown, ...).",
        },
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "priority": 1},
        {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "kubeinfer",
                "app.kubernetes.io/part-of": "kubeinfer",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "kubeinfer"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `kubeinfer crds` from kubeinfer.operator.api. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def write_crds(out: str | Path) -> list[Path]:
    """Write every CRD into ``out``; returns the files written."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{GROUP}_{PLURAL}.yaml"
    path.write_text(render_crd())
    return [path]
