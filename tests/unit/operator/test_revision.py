"""The revision hash covers exactly what needs new pods."""

from typing import Any

import pytest
from kubeinfer.operator.api import parse_spec
from kubeinfer.operator.builders.revision import compute_revision

IMAGE = "ghcr.io/kubeinfer/worker:1"
BASE: dict[str, Any] = {"model": {"name": "m", "source": "org/m-7b"}, "replicas": 2}


def changed(section: str, field: str, value: Any) -> dict[str, Any]:
    raw = {"model": dict(BASE["model"]), "replicas": 2}
    if section == "":
        raw[field] = value
    else:
        raw.setdefault(section, {})
        raw[section] = {**raw.get(section, {}), field: value}
    return raw


NEW_PODS = [
    ("model", "source", "org/other-7b"),
    ("model", "revision", "abc123"),
    ("model", "engineArgs", {"maxModelLen": 4096}),
    ("model", "engineArgs", {"extraArgs": ["--enforce-eager"]}),
    ("worker", "image", "ghcr.io/kubeinfer/worker:2"),
    ("worker", "engine", "simulated"),
    ("gpu", "product", "NVIDIA-H100-80GB-HBM3"),
]
SAME_PODS = [
    ("", "replicas", 7),
    ("routing", "strategy", "prefix-affinity"),
    ("routing", "retries", 0),
    ("rollout", "steps", [50, 100]),
    ("rollout", "maxSurge", 0),
    ("model", "engineArgs", {"gpuMemoryUtilization": 0.9}),  # the default, written out
]


@pytest.mark.parametrize(("section", "field", "value"), NEW_PODS)
def test_change_that_needs_new_pods_changes_revision(section: str, field: str, value: Any) -> None:
    before = compute_revision(parse_spec(BASE), IMAGE)
    after = compute_revision(parse_spec(changed(section, field, value)), IMAGE)
    assert before != after


@pytest.mark.parametrize(("section", "field", "value"), SAME_PODS)
def test_change_applied_in_place_keeps_revision(section: str, field: str, value: Any) -> None:
    before = compute_revision(parse_spec(BASE), IMAGE)
    after = compute_revision(parse_spec(changed(section, field, value)), IMAGE)
    assert before == after


def test_revision_is_stable_and_short() -> None:
    first = compute_revision(parse_spec(BASE), IMAGE)
    assert first == compute_revision(parse_spec(dict(BASE)), IMAGE)
    assert len(first) == 10
    assert all(ch in "0123456789abcdef" for ch in first)


def test_operator_default_image_is_part_of_the_revision() -> None:
    spec = parse_spec(BASE)
    assert compute_revision(spec, IMAGE) != compute_revision(spec, "ghcr.io/kubeinfer/worker:2")
