"""Does the model fit the GPU? ("warn but allow"; CPU workers: builders.cpubackend)

The estimate is deliberately simple and says so: weights (parameters x
bytes per parameter) plus 20 % for activations and a minimal KV cache,
plus 1 GiB of CUDA context. vLLM then takes ``gpuMemoryUtilization`` of
the GPU, so that fraction of the GPU's memory is what the model must fit.
A wrong estimate only produces a warning; the pods are still created, and
the worker's own pre-check reports the real shortfall.
"""

import re
from dataclasses import dataclass

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.spec import Dtype, InferenceServiceSpec, ModelSpec

GIB = 1024**3
BYTES_PER_PARAMETER = {Dtype.AUTO: 2, Dtype.FLOAT16: 2, Dtype.BFLOAT16: 2, Dtype.FLOAT32: 4}
OVERHEAD_FACTOR = 1.2
CUDA_CONTEXT_GIB = 1.0
# "Llama-3.1-8B-Instruct", "qwen2.5-0.5b", "Mixtral-8x7B" (the last is 8 x 7).
_SIZE_IN_NAME = re.compile(r"(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
LABEL_GPU_PRODUCT = c.LABEL_GPU_PRODUCT
LABEL_GPU_MEMORY = c.LABEL_GPU_MEMORY


@dataclass(frozen=True)
class GpuNode:
    """What GPU feature discovery labels say about a node's GPUs."""

    name: str
    product: str | None
    memory_mib: int | None

    @classmethod
    def from_labels(cls, name: str, labels: dict[str, str]) -> "GpuNode":
        memory = labels.get(LABEL_GPU_MEMORY)
        return cls(
            name=name,
            product=labels.get(LABEL_GPU_PRODUCT),
            memory_mib=int(memory) if memory and memory.isdigit() else None,
        )


def parameters_from_name(source: str) -> float | None:
    """Billions of parameters guessed from a model id, or None."""
    match = _SIZE_IN_NAME.search(source.rsplit("/", 1)[-1])
    if match is None:
        return None
    experts = int(match.group(1)) if match.group(1) else 1
    return experts * float(match.group(2))


def estimate_vram_gib(model: ModelSpec) -> float | None:
    """GiB the model needs on one GPU; None when nothing tells us."""
    if model.vram_gi_b is not None:
        return model.vram_gi_b
    billions = model.parameters_billions or parameters_from_name(model.source)
    if billions is None:
        return None
    weights = billions * 1e9 * BYTES_PER_PARAMETER[model.engine_args.dtype] / GIB
    return round(weights * OVERHEAD_FACTOR + CUDA_CONTEXT_GIB, 1)


def matching_nodes(spec: InferenceServiceSpec, nodes: list[GpuNode]) -> list[GpuNode]:
    """The GPU nodes the worker pods may land on."""
    out = []
    for node in nodes:
        if spec.gpu.product and node.product != spec.gpu.product:
            continue
        if spec.gpu.min_memory_mi_b and (node.memory_mib or 0) < spec.gpu.min_memory_mi_b:
            continue
        out.append(node)
    return out


def vram_warnings(spec: InferenceServiceSpec, nodes: list[GpuNode]) -> list[str]:
    """Human-readable warnings, one per GPU product that is too small.

    No warning when the need is unknown or no node advertises memory, and
    none for CPU workers (gpu.count 0): they use no GPU memory at all.
    """
    if spec.gpu.cpu_only:
        return []
    need = estimate_vram_gib(spec.model)
    candidates = matching_nodes(spec, nodes)
    if not candidates and nodes:
        wanted = spec.gpu.product or f">= {spec.gpu.min_memory_mi_b} MiB"
        return [f"no node offers the requested GPU ({wanted})"]
    if need is None:
        return []
    utilisation = spec.model.engine_args.gpu_memory_utilization
    warnings = []
    seen: set[tuple[str | None, int]] = set()
    for node in sorted(candidates, key=lambda n: (n.product or "", n.name)):
        if node.memory_mib is None or (node.product, node.memory_mib) in seen:
            continue
        seen.add((node.product, node.memory_mib))
        total_gib = node.memory_mib / 1024
        usable = total_gib * utilisation
        if need > usable:
            warnings.append(
                f"model needs ~{need:.1f} GiB, GPU {node.product or 'unknown'} has "
                f"{total_gib:.0f} GiB ({usable:.1f} GiB at gpuMemoryUtilization {utilisation})"
            )
    return warnings
