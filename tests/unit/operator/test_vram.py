"""VRAM fit: warn, never block."""

import pytest
from kubeinfer.operator.api import parse_spec
from kubeinfer.operator.vram import (
    GpuNode,
    estimate_vram_gib,
    parameters_from_name,
    vram_warnings,
)

H100 = GpuNode("h1", "NVIDIA-H100-80GB-HBM3", 81559)
A400 = GpuNode("a1", "NVIDIA-RTX-A400", 4096)


@pytest.mark.parametrize(
    ("source", "billions"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8.0),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("mistralai/Mixtral-8x7B-v0.1", 56.0),
        ("/models/llama-70b", 70.0),
        ("org/bert-base", None),
    ],
)
def test_parameters_from_name(source: str, billions: float | None) -> None:
    assert parameters_from_name(source) == billions


@pytest.mark.parametrize(
    ("model", "gib"),
    [
        ({"vramGiB": 12.5}, 12.5),
        ({"parametersBillions": 8}, 18.9),  # 8e9 * 2 B = 14.9 GiB * 1.2 + 1
        ({"parametersBillions": 8, "engineArgs": {"dtype": "float32"}}, 36.8),
        ({}, 18.9),  # from the name "org/m-8b"
    ],
)
def test_estimate(model: dict[str, object], gib: float) -> None:
    spec = parse_spec({"model": {"name": "m", "source": "org/m-8b", **model}})
    assert estimate_vram_gib(spec.model) == gib


def test_unknown_size_gives_no_estimate_and_no_warning() -> None:
    spec = parse_spec({"model": {"name": "m", "source": "org/bert"}})
    assert estimate_vram_gib(spec.model) is None
    assert vram_warnings(spec, [A400]) == []


CASES = [
    ({"parametersBillions": 8}, [H100], []),
    (
        {"parametersBillions": 8},
        [H100, A400],
        [
            "model needs ~18.9 GiB, GPU NVIDIA-RTX-A400 has 4 GiB "
            "(3.6 GiB at gpuMemoryUtilization 0.9)"
        ],
    ),
    (
        {"vramGiB": 75},
        [H100],
        [
            "model needs ~75.0 GiB, GPU NVIDIA-H100-80GB-HBM3 has 80 GiB "
            "(71.7 GiB at gpuMemoryUtilization 0.9)"
        ],
    ),
]


@pytest.mark.parametrize(("model", "nodes", "warnings"), CASES)
def test_warnings(model: dict[str, object], nodes: list[GpuNode], warnings: list[str]) -> None:
    spec = parse_spec({"model": {"name": "m", "source": "org/x", **model}})
    assert vram_warnings(spec, nodes) == warnings


def test_product_selector_limits_the_nodes_checked() -> None:
    spec = parse_spec(
        {
            "model": {"name": "m", "source": "org/x", "parametersBillions": 8},
            "gpu": {"product": "NVIDIA-H100-80GB-HBM3"},
        }
    )
    assert vram_warnings(spec, [H100, A400]) == []


def test_no_matching_node_is_a_warning() -> None:
    spec = parse_spec(
        {"model": {"name": "m", "source": "org/x"}, "gpu": {"product": "NVIDIA-B200"}}
    )
    assert vram_warnings(spec, [H100]) == ["no node offers the requested GPU (NVIDIA-B200)"]


@pytest.mark.parametrize("nodes", [[A400], [H100, A400], []])
def test_cpu_workers_use_no_gpu_memory(nodes: list[GpuNode]) -> None:
    spec = parse_spec(
        {"model": {"name": "m", "source": "org/x", "vramGiB": 75}, "gpu": {"count": 0}}
    )
    assert vram_warnings(spec, nodes) == []
