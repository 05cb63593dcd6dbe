"""What a worker on vLLM's CPU backend (gpu.count 0) needs from its pod.

vLLM on CPU keeps weights, activations and the KV cache in the pod's own
memory, and allocates the whole KV cache at start-up from
VLLM_CPU_KVCACHE_SPACE (GiB). Too large, and the pod is OOM-killed at its
memory limit before it serves a request; so the operator derives the value
from the memory limit and the model's estimated size.
"""

import math
import re

from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.vram import estimate_vram_gib

# Half of what the model leaves: the other half covers activations of a
# long prefill, the Python runtime and vLLM's own buffers.
KV_CACHE_SHARE = 0.5
MIN_KV_CACHE_GIB = 1
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_UNIT_BYTES = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_gib(quantity: str) -> float:
    """A Kubernetes memory quantity (as ResourceSpec allows it) in GiB.

    Raises ValueError for anything else.
    """
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return float(match.group(1)) * _UNIT_BYTES[match.group(2)] / 2**30


def cpu_kv_cache_gib(spec: InferenceServiceSpec) -> int:
    """VLLM_CPU_KVCACHE_SPACE for one worker: whole GiB, at least 1.

    A model that does not fit at all still gets 1 GiB: vLLM then fails with
    its own out-of-memory message, which the worker reports.
    """
    memory = quantity_gib(spec.worker.resources.memory)
    model = estimate_vram_gib(spec.model) or 0.0
    return max(MIN_KV_CACHE_GIB, math.floor((memory - model) * KV_CACHE_SHARE))


def cpu_threads(cpu: str) -> int:
    """Whole cores in a CPU request ("4", "2.5", "500m"), at least 1."""
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, math.floor(cores))


def cpu_thread_env(spec: InferenceServiceSpec) -> list[dict[str, str]]:
    """OpenMP threads for vLLM's CPU kernels: one per requested core, unpinned.

    vLLM's default ("auto") pins its threads to every CPU it may run on,
    which without the kubelet's static CPU manager is the whole node: two
    workers on one node would then fight over the same cores.
    """
    return [
        {"name": "OMP_NUM_THREADS", "value": str(cpu_threads(spec.worker.resources.cpu))},
        {"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"},
    ]


def cpu_memory_warnings(spec: InferenceServiceSpec) -> list[str]:
    """The CPU counterpart of the VRAM check: warn (never block) when the
    model alone needs more than a worker pod's memory limit."""
    if not spec.gpu.cpu_only:
        return []
    need = estimate_vram_gib(spec.model)
    memory = quantity_gib(spec.worker.resources.memory)
    if need is None or need <= memory:
        return []
    return [
        f"model needs ~{need:.1f} GiB, a CPU worker has {memory:.1f} GiB (worker.resources.memory)"
    ]
