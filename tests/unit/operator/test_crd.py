"""The generated CRD: no drift from the models, and a valid structural schema."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.operator.api.spec import NO_GPU_SELECTORS_MESSAGE
from kubeinfer.operator.crdgen import build_crd, render_crd

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "kubeinfer.io_inferenceservices.yaml"


def walk(node: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += walk(value)
    elif isinstance(node, list):
        for value in node:
            out += walk(value)
    return out


def test_committed_crd_matches_the_generator() -> None:
    assert CRD_FILE.read_text() == render_crd(), (
        "crds/ is out of date with the API models: run `make crds` and commit the result"
    )


def test_crd_is_a_valid_kubernetes_object(
    valid_manifest: Callable[[dict[str, Any]], None],
) -> None:
    valid_manifest(yaml.safe_load(CRD_FILE.read_text()))


def test_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in walk(schema["properties"]["spec"]) + walk(schema["properties"]["status"]):
        assert "$ref" not in node
        assert "anyOf" not in node
        assert "title" not in node
        if "properties" in node:
            assert node.get("type") == "object", node


def test_every_spec_field_is_described() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = [
        name
        for node in walk(spec)
        for name, prop in node.get("properties", {}).items()
        if "description" not in prop
    ]
    assert missing == []


def test_subresources_columns_and_short_name() -> None:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    names = [col["name"] for col in version["additionalPrinterColumns"] if "priority" not in col]
    assert names == [
        "Ready",
        "Replicas",
        "Desired",
        "Canary",
        "Strategy",
        "Phase",
        "Scaling",
        "Age",
    ]
    assert crd["spec"]["names"]["shortNames"] == ["infsvc"]


def test_cel_rules_cover_what_the_schema_cannot_say() -> None:
    crd = build_crd()
    rules = [
        rule["message"] for node in walk(crd) for rule in node.get("x-kubernetes-validations", [])
    ]
    assert "rollout.steps must be strictly ascending" in rules
    assert "rollout.steps must end with 100" in rules
    assert "rollout.maxSurge must not exceed replicas" in rules
    assert NO_GPU_SELECTORS_MESSAGE in rules
