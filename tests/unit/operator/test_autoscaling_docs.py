"""docs/autoscaling.md: the KEDA ScaledObject example is one KEDA accepts
(the fields its CRD requires, with their types), it targets something with
a scale subresource, and its query names metrics the router exports."""

import re
from pathlib import Path
from typing import Literal

import yaml
from kubeinfer.operator.api.constants import GROUP, KIND, VERSION
from kubeinfer.operator.crdgen import build_crd
from kubeinfer.router.metrics import render
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DOC = Path(__file__).resolve().parents[3] / "docs" / "autoscaling.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel)


# The part of keda.sh/v1alpha1 ScaledObject the example uses, with the
# types and required fields of KEDA's CRD (scaleTargetRef.name, triggers[]
# with type and a map of string metadata).
class ScaleTargetRef(_Strict):
    api_version: str | None = None
    kind: str | None = None
    name: str


class Trigger(_Strict):
    type: str
    metadata: dict[str, str]
    name: str | None = None


class ScaledObjectSpec(_Strict):
    scale_target_ref: ScaleTargetRef
    triggers: list[Trigger] = Field(min_length=1)
    min_replica_count: int | None = None
    max_replica_count: int | None = None
    polling_interval: int | None = None
    cooldown_period: int | None = None


class ObjectMeta(_Strict):
    name: str
    namespace: str | None = None


class ScaledObject(_Strict):
    api_version: Literal["keda.sh/v1alpha1"]
    kind: Literal["ScaledObject"]
    metadata: ObjectMeta
    spec: ScaledObjectSpec


def scaled_objects() -> list[ScaledObject]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    docs = [d for block in blocks for d in yaml.safe_load_all(block)]
    return [ScaledObject.model_validate(d) for d in docs if d.get("kind") == "ScaledObject"]


def router_metric_names() -> set[str]:
    snap = {
        "generation": 1,
        "model": "m",
        "backends": [],
        "revisions": {},
        "queue": {"length": 0, "capacity": 1},
        "demand": {"arrivals": 0, "idleSeconds": 1.0},
        "counters": {},
    }
    text = render(snap).decode()
    return set(re.findall(r"^# TYPE (\S+)", text, flags=re.M))


def test_the_example_is_a_valid_scaled_object() -> None:
    (obj,) = scaled_objects()
    spec = obj.spec
    assert spec.min_replica_count is not None
    assert spec.max_replica_count is not None
    assert 0 <= spec.min_replica_count <= spec.max_replica_count
    prometheus = [t for t in spec.triggers if t.type == "prometheus"]
    assert prometheus
    assert {"serverAddress", "query", "threshold"} <= set(prometheus[0].metadata)
    float(prometheus[0].metadata["threshold"])  # KEDA parses it as a number


def test_it_targets_an_inference_service_with_a_scale_subresource() -> None:
    (obj,) = scaled_objects()
    ref = obj.spec.scale_target_ref
    assert (ref.api_version, ref.kind) == (f"{GROUP}/{VERSION}", KIND)
    (version,) = build_crd()["spec"]["versions"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"


def test_the_query_uses_metrics_the_router_exports() -> None:
    (obj,) = scaled_objects()
    query = obj.spec.triggers[0].metadata["query"]
    used = set(re.findall(r"\b(kubeinfer_router_[a-z_]+)", query))
    assert used
    assert used <= router_metric_names()
    doc_names = set(re.findall(r"`(kubeinfer_router_[a-z_]+)`", DOC.read_text()))
    # counters render as <name>_total in the text format
    exported = router_metric_names()
    assert {n.removesuffix("_total") for n in doc_names} <= exported | {
        n.removesuffix("_total") for n in exported
    }
