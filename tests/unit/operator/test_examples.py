"""The examples in examples/ are valid and mean what their comments say."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.operator.api import InferenceService, parse_spec
from kubeinfer.operator.builders.revision import compute_revision

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
IMAGE = "ghcr.io/kubeinfer/worker:0.1.0"


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return result


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert obj["kind"] == "InferenceService"
    InferenceService.model_validate(obj)


def test_minimal_example_relies_on_defaults() -> None:
    assert set(load("minimal.yaml")["spec"]) == {"model", "replicas"}


def test_production_example_is_eight_spread_gpus_with_canary_steps() -> None:
    spec = parse_spec(load("production.yaml")["spec"])
    assert spec.replicas == 8
    assert spec.gpu.placement.value == "spread"
    assert spec.rollout.steps == [10, 25, 50, 100]
    assert spec.model.secret_ref is not None


def test_canary_example_is_a_new_revision_of_production() -> None:
    before, after = load("production.yaml"), load("production-canary.yaml")
    assert before["metadata"] == after["metadata"]
    old, new = parse_spec(before["spec"]), parse_spec(after["spec"])
    assert compute_revision(old, IMAGE) != compute_revision(new, IMAGE)
    assert old.routing == new.routing
    assert old.rollout == new.rollout


def test_cpu_example_is_real_vllm_without_a_gpu() -> None:
    spec = parse_spec(load("cpu.yaml")["spec"])
    assert spec.gpu.count == 0
    assert spec.worker.engine.value == "vllm"
    assert spec.gpu.product is None
    assert spec.gpu.min_memory_mi_b is None
