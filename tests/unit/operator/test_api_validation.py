"""The API: defaults, and every validation rule with its exact message."""

import re
from typing import Any

import pytest
from kubeinfer.operator.api import (
    Engine,
    InvalidSpecError,
    Placement,
    RoutingTable,
    Strategy,
    engineflags,
    parse_spec,
)

BASE: dict[str, Any] = {"model": {"name": "llama", "source": "meta/llama-8b"}}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with one nested field set, e.g. with_("rollout.steps", [5])."""
    raw: dict[str, Any] = {"model": dict(BASE["model"])}
    node = raw
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


class TestDefaults:
    def test_model_only_spec_gets_working_defaults(self) -> None:
        spec = parse_spec(BASE)
        assert spec.replicas == 1
        assert spec.gpu.resource_name == "nvidia.com/gpu"
        assert spec.gpu.placement is Placement.SPREAD
        assert spec.routing.strategy is Strategy.LEAST_LOADED
        assert spec.rollout.steps == [10, 25, 50, 100]
        assert spec.rollout.max_surge == 1
        assert spec.rollout.auto_rollback is True
        assert spec.worker.engine is Engine.VLLM

    def test_defaults_round_trip_through_camel_case(self) -> None:
        spec = parse_spec(BASE)
        again = parse_spec(spec.to_dict())
        assert again == spec
        assert "maxSurge" in spec.to_dict()["rollout"]
        assert "vramGiB" not in spec.to_dict()["model"]

    def test_autoscaling_owns_replicas_so_surge_is_bounded_by_max(self) -> None:
        # replicas 0 (scaled to zero) with maxSurge 2 is fine under autoscaling
        spec = parse_spec(
            {
                **BASE,
                "replicas": 0,
                "rollout": {"maxSurge": 2},
                "autoscaling": {"minReplicas": 0, "maxReplicas": 4, "scaleToZeroAfterSeconds": 60},
            }
        )
        assert spec.autoscaling is not None
        assert spec.autoscaling.target_in_flight_per_replica == 32

    def test_zero_replicas_allowed(self) -> None:
        assert parse_spec(with_("replicas", 0)).replicas == 0

    @pytest.mark.parametrize(
        ("gpu", "cpu_only"),
        [
            ({}, False),
            ({"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}, False),
            ({"count": 0}, True),
            # resourceName has a default, so it can't mean "asked for a GPU".
            ({"count": 0, "resourceName": "nvidia.com/gpu", "placement": "pack"}, True),
        ],
    )
    def test_gpu_count(self, gpu: dict[str, Any], cpu_only: bool) -> None:
        spec = parse_spec(with_("gpu", gpu))
        assert spec.gpu.count == (0 if cpu_only else 1)
        assert spec.gpu.cpu_only is cpu_only


INVALID = [
    (with_("replicas", -1), "replicas: Input should be greater than or equal to 0"),
    (with_("rollout.steps", [50, 25, 100]), "rollout: rollout.steps must be strictly ascending"),
    (with_("rollout.steps", [10, 10, 100]), "rollout: rollout.steps must be strictly ascending"),
    (with_("rollout.steps", [10, 50]), "rollout: rollout.steps must end with 100"),
    (with_("rollout.steps", [0, 100]), "rollout: rollout.steps must be between 1 and 100"),
    (
        with_("rollout.steps", []),
        "rollout.steps: List should have at least 1 item after validation",
    ),
    (
        {**with_("rollout.maxSurge", 3), "replicas": 2},
        "maxSurge must not exceed replicas",
    ),
    (with_("routing.strategy", "random"), "routing.strategy: Input should be 'round-robin'"),
    (with_("gpu.placement", "scatter"), "gpu.placement: Input should be 'spread'"),
    (with_("routing.retries", 9), "routing.retries: Input should be less than or equal to 5"),
    (
        with_("model.engineArgs.gpuMemoryUtilization", 1.5),
        "model.engineArgs.gpuMemoryUtilization: Input should be less than or equal to 1",
    ),
    (
        with_("model.source", "ftp://host/x"),
        "model: model.source scheme is not supported; use a hub id",
    ),
    (
        with_("model.engineArgs.extraArgs", ["--port", "9000"]),
        "may not set --port: the worker sets it",
    ),
    (with_("model.engineArgs.extraArgs", ["--host=1.2.3.4"]), "may not set --host"),
    (with_("model.engineArgs.extraArgs", ["--served-model-name=x"]), "--served-model-name"),
    (with_("model.engineArgs.extraArgs", ["--served_model_name", "x"]), "--served-model-name"),
    (with_("model.engineArgs.extraArgs", ["--api-key", "s3cret"]), "put secrets in a Secret"),
    (with_("model.engineArgs.extraArgs", ["--hf-token=abc"]), "put secrets in a Secret"),
    (with_("model.engineArgs.extraArgs", ["--tensor-parallel-size", "2"]), "exactly one GPU"),
    (with_("model.engineArgs.extraArgs", ["-tp", "2"]), "exactly one GPU"),
    (with_("model.name", "has space"), "model.name: String should match pattern"),
    (with_("model.secretRef", {"name": "Bad_Name"}), "model.secretRef.name: String should match"),
    (with_("replica", 3), "replica: Extra inputs are not permitted"),
    (with_("worker.engine", "tgi"), "worker.engine: Input should be 'vllm' or 'simulated'"),
    (with_("rollout.analysis.maxErrorRate", 2), "maxErrorRate: Input should be less than or equal"),
    ({"replicas": 1}, "model: Field required"),
    (with_("gpu.count", 2), "gpu.count: Input should be less than or equal to 1"),
    (with_("gpu.count", -1), "gpu.count: Input should be greater than or equal to 0"),
    (
        with_("gpu", {"count": 0, "product": "NVIDIA-H100-80GB-HBM3"}),
        "gpu: gpu.product and gpu.minMemoryMiB select GPUs: leave them out when gpu.count is 0",
    ),
    (
        with_("gpu", {"count": 0, "minMemoryMiB": 40000}),
        "gpu: gpu.product and gpu.minMemoryMiB select GPUs: leave them out when gpu.count is 0",
    ),
    (
        with_("gpu", {"count": 0, "placement": "largest-first"}),
        "gpu: gpu.placement largest-first ranks nodes by GPU memory",
    ),
    (
        with_(
            "gpu.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In"}]}]},
        ),
        "values must be empty for Exists and DoesNotExist and given otherwise",
    ),
    (
        with_(
            "gpu.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
            {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "m", "operator": "Gt", "values": ["x"]}]}
                ]
            },
        ),
        "Gt and Lt take exactly one integer value",
    ),
    (
        with_(
            "gpu.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
            {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]}
                ]
            },
        ),
        "operator: String should match pattern",
    ),
    (
        with_("autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    (
        with_("autoscaling", {"minReplicas": 0, "maxReplicas": 2}),
        "autoscaling.minReplicas 0 needs autoscaling.scaleToZeroAfterSeconds",
    ),
    (
        with_("autoscaling", {"maxReplicas": 2, "scaleToZeroAfterSeconds": 60}),
        "scaleToZeroAfterSeconds only applies with autoscaling.minReplicas 0",
    ),
    (
        {**with_("autoscaling", {"maxReplicas": 2}), "rollout": {"maxSurge": 3}},
        "rollout.maxSurge must not exceed autoscaling.maxReplicas",
    ),
    (with_("autoscaling", {"minReplicas": 1}), "autoscaling.maxReplicas: Field required"),
    (
        with_("autoscaling", {"maxReplicas": 2, "targetInFlightPerReplica": 0}),
        "targetInFlightPerReplica: Input should be greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(("raw", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_spec_is_rejected_with_a_clear_message(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(raw)
    assert message in str(caught.value)


def test_all_problems_are_reported_at_once() -> None:
    raw = with_("replicas", -1)
    raw["routing"] = {"strategy": "random"}
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(raw)
    assert "replicas:" in str(caught.value)
    assert "routing.strategy:" in str(caught.value)


ROUTING_INVALID = [
    ({"revisionWeights": {"a": 60, "b": 30}}, "revisionWeights must add up to 100, not 90"),
    ({"revisionWeights": {"a": 120, "b": -20}}, "revisionWeights must be between 0 and 100"),
    (
        {
            "backends": [
                {"name": "p", "url": "http://127.0.0.1:1", "revision": "r"},
                {"name": "p", "url": "http://127.0.0.1:2", "revision": "r"},
            ]
        },
        "backend names must be unique",
    ),
]


@pytest.mark.parametrize(("extra", "message"), ROUTING_INVALID)
def test_routing_table_rejects_inconsistent_tables(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutingTable.model_validate({"service": "s", "model": "m", **extra})


# The CRD's CEL rules and pydantic must refuse the same arguments: the CEL
# side is an RE2 pattern generated from the same flag sets (RE2 and Python's
# re agree on these patterns: alternation, classes, anchors).
ARGS = [
    "--port", "--port=1", "--PORT", "--portal", "--host", "--uds=/x", "--root_path=/", "--model",
    "--served-model-name", "--served_model_name=x", "--api-key", "--api_key=k", "--hf-token",
    "-tp", "-tp=2", "-tpx", "-pp", "--tensor_parallel_size", "--data-parallel-size=2",
    "--pipeline-parallel-size", "--enable-prefix-caching", "--max-model-len", "9000", "-1",
    "--seed=7", "port", "-", "--", "--hf-tokens",
]  # fmt: skip


@pytest.mark.parametrize("arg", ARGS)
def test_cel_pattern_and_pydantic_agree(arg: str) -> None:
    refused_by_cel = any(re.search(r.regex(), arg) for r in engineflags.RESERVED)
    refused_by_pydantic = engineflags.reserved_flag_problem([arg]) is not None
    assert refused_by_cel == refused_by_pydantic


def test_every_reserved_flag_is_refused_both_ways() -> None:
    for reserved in engineflags.RESERVED:
        for flag in reserved.flags:
            assert re.search(reserved.regex(), f"{flag}=1"), flag
            assert engineflags.reserved_flag_problem([flag, "1"]) == reserved.message(flag)
