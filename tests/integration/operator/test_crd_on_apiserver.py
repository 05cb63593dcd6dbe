"""The generated CRD on a real API server: examples accepted, bad specs
rejected with the message a person reads, defaults applied."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.operator.api import engineflags
from kubeinfer.operator.api.spec import (
    IDLE_NEEDS_ZERO_MESSAGE,
    MIN_OVER_MAX_MESSAGE,
    NO_GPU_LARGEST_FIRST_MESSAGE,
    NO_GPU_SELECTORS_MESSAGE,
    SURGE_OVER_MAX_MESSAGE,
    ZERO_NEEDS_IDLE_MESSAGE,
)

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def dry_run(kube: KubeClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    out = kube.kubectl(
        "apply",
        "--dry-run=server",
        "-o",
        "yaml",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(obj),
    )
    result: dict[str, Any] = yaml.safe_load(out)
    return result


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(
    kube: KubeClient, namespace: str, operator_identity: Path, path: Path
) -> None:
    obj = yaml.safe_load(path.read_text())
    obj["metadata"].pop("namespace", None)
    stored = dry_run(kube, namespace, obj)
    assert contains(stored["spec"], obj["spec"])


def contains(stored: Any, written: Any) -> bool:
    """Everything written is stored as written; the server may only add defaults."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            key in stored and contains(stored[key], value) for key, value in written.items()
        )
    return bool(stored == written)


def test_server_applies_defaults(kube: KubeClient, namespace: str, operator_identity: Path) -> None:
    stored = dry_run(kube, namespace, yaml.safe_load((EXAMPLES / "minimal.yaml").read_text()))
    assert stored["spec"]["replicas"] == 1


BAD = [
    ({"replicas": -1}, "spec.replicas: Invalid value: -1"),
    ({"rollout": {"steps": [10, 50]}}, "rollout.steps must end with 100"),
    ({"rollout": {"steps": [50, 10, 100]}}, "rollout.steps must be strictly ascending"),
    ({"rollout": {"steps": [0, 100]}}, "rollout.steps must be between 1 and 100"),
    ({"replicas": 2, "rollout": {"maxSurge": 3}}, "rollout.maxSurge must not exceed replicas"),
    (
        {"routing": {"strategy": "random"}},
        'supported values: "round-robin", "least-loaded", "weighted", "prefix-affinity"',
    ),
    ({"gpu": {"placement": "scatter"}}, 'supported values: "spread", "pack", "largest-first"'),
    ({"gpu": {"count": 2}}, "spec.gpu.count: Invalid value: 2"),
    ({"gpu": {"count": 0, "product": "NVIDIA-H100-80GB-HBM3"}}, NO_GPU_SELECTORS_MESSAGE),
    ({"gpu": {"count": 0, "minMemoryMiB": 40000}}, NO_GPU_SELECTORS_MESSAGE),
    ({"gpu": {"count": 0, "placement": "largest-first"}}, NO_GPU_LARGEST_FIRST_MESSAGE),
    # What the worker would refuse at start-up, refused at apply time instead.
    (
        {"model": {"name": "m", "source": "org/m", "engineArgs": {"extraArgs": ["--port", "9"]}}},
        engineflags.MANAGED.message("any of " + ", ".join(sorted(engineflags.MANAGED.flags))),
    ),
    (
        {
            "model": {
                "name": "m",
                "source": "o/m",
                "engineArgs": {"extraArgs": ["--served_model_name=x"]},
            }
        },
        "engineArgs.extraArgs may not set any of --host",
    ),
    (
        {"model": {"name": "m", "source": "org/m", "engineArgs": {"extraArgs": ["-tp", "2"]}}},
        "a worker pod has exactly one GPU",
    ),
    (
        {"model": {"name": "m", "source": "org/m", "engineArgs": {"extraArgs": ["--api-key=k"]}}},
        "put secrets in a Secret (model.secretRef)",
    ),
    ({"model": {"name": "m", "source": "ftp://host/m"}}, engineflags.SOURCE_SCHEME_MESSAGE),
    (
        {
            "gpu": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "m", "operator": "Gt", "values": ["x"]}]}
                        ]
                    }
                }
            }
        },
        "Gt and Lt take exactly one integer value",
    ),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, MIN_OVER_MAX_MESSAGE),
    ({"autoscaling": {"minReplicas": 0, "maxReplicas": 2}}, ZERO_NEEDS_IDLE_MESSAGE),
    ({"autoscaling": {"maxReplicas": 2, "scaleToZeroAfterSeconds": 60}}, IDLE_NEEDS_ZERO_MESSAGE),
    (
        {"autoscaling": {"maxReplicas": 2}, "rollout": {"maxSurge": 3}},
        SURGE_OVER_MAX_MESSAGE,
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _, m in BAD])
def test_invalid_specs_are_rejected_with_a_clear_message(
    kube: KubeClient, namespace: str, operator_identity: Path, change: dict[str, Any], message: str
) -> None:
    obj = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    obj["spec"].update(change)
    with pytest.raises(subprocess.CalledProcessError) as caught:
        dry_run(kube, namespace, obj)
    assert message in caught.value.stderr


def test_long_names_are_rejected(kube: KubeClient, namespace: str, operator_identity: Path) -> None:
    obj = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    obj["metadata"]["name"] = "x" * 41
    with pytest.raises(subprocess.CalledProcessError) as caught:
        dry_run(kube, namespace, obj)
    assert "metadata.name must be at most 40 characters" in caught.value.stderr
