"""The engine's command line: vLLM's own server, or the simulated engine.

Pure functions: a ModelSpec in, an argv out. The only thing the agent does
with vLLM is start it with these flags, probe it and stop it.
"""

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from kubeinfer.operator.api import Dtype, ModelSpec, SimulatorSpec
from kubeinfer.operator.api.constants import ENV_VLLM_CPU_KVCACHE_SPACE
from kubeinfer.operator.api.engineflags import flag_name
from kubeinfer.worker.config import Device


class LaunchError(ValueError):
    """The model spec cannot be turned into a working engine command line."""


# Flags that engineArgs fields own when they are set.
FIELD_FLAGS = {
    "--max-model-len": "maxModelLen",
    "--dtype": "dtype",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--max-num-seqs": "maxNumSeqs",
    "--revision": "revision",
}
REMOTE_SCHEMES = ("s3://", "gs://")
# KV cache (GiB) on vLLM's CPU backend when nothing set it (the operator
# derives it from the pod's memory; this is for a worker run by hand).
# It must always be set: without it vLLM 0.32 reserves
# gpuMemoryUtilization x the whole NUMA node's memory, blind to the pod's
# memory limit, and the pod is OOM-killed.
DEFAULT_CPU_KVCACHE_GIB = 4
# vLLM applies VLLM_CPU_KVCACHE_SPACE over this flag; a user who sets the
# flag in extraArgs means it, so the variable is left out then.
KV_CACHE_FLAG = "--kv-cache-memory-bytes"


@dataclass(frozen=True)
class ModelLocation:
    """Where vLLM loads the weights from."""

    model: str  # what vLLM gets as its model argument
    kind: str  # "hub", "local" or "remote" (object storage)


def model_location(source: str) -> ModelLocation:
    """Map a model source to vLLM's model argument.

    pvc:// is resolved by the operator's pod builder (it mounts the claim
    and passes the mount path), so the worker only ever sees a path.
    """
    if source.startswith("hf://"):
        return ModelLocation(source.removeprefix("hf://"), "hub")
    if source.startswith(REMOTE_SCHEMES):
        return ModelLocation(source, "remote")
    if source.startswith("pvc://"):
        raise LaunchError(
            f"model source {source}: pvc:// must be mounted by the operator, "
            "which passes the mount path to the worker"
        )
    if source.startswith("/"):
        return ModelLocation(source, "local")
    return ModelLocation(source, "hub")


def check_extra_args(model: ModelSpec) -> None:
    """Reject extraArgs that would break the worker. Raises LaunchError."""
    set_fields = {
        "--max-model-len": model.engine_args.max_model_len is not None,
        "--dtype": model.engine_args.dtype is not Dtype.AUTO,
        "--gpu-memory-utilization": True,
        "--max-num-seqs": model.engine_args.max_num_seqs is not None,
        "--revision": model.revision is not None,
    }
    for arg in model.engine_args.extra_args:
        flag = flag_name(arg)
        if flag in FIELD_FLAGS and set_fields[flag]:
            field = FIELD_FLAGS[flag]
            where = "model.revision" if field == "revision" else f"engineArgs.{field}"
            raise LaunchError(f"engineArgs.extraArgs sets {flag}, which {where} already sets")


def _has_flag(args: list[str], flag: str) -> bool:
    return any(flag_name(arg) == flag for arg in args)


def build_vllm_command(
    model: ModelSpec, host: str, port: int, device: Device = Device.GPU
) -> list[str]:
    """`vllm serve` with the model spec's engine args. Raises LaunchError.

    On CPU there is no --gpu-memory-utilization: vLLM's CPU backend sizes
    its KV cache from VLLM_CPU_KVCACHE_SPACE instead (build_vllm_env).
    """
    check_extra_args(model)
    location = model_location(model.source)
    args = model.engine_args
    command = [
        "vllm",
        "serve",
        location.model,
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        model.name,
    ]
    if model.revision is not None and location.kind == "hub":
        command += ["--revision", model.revision]
    if args.max_model_len is not None:
        command += ["--max-model-len", str(args.max_model_len)]
    if args.dtype is not Dtype.AUTO:
        command += ["--dtype", args.dtype.value]
    if device is Device.GPU:
        command += ["--gpu-memory-utilization", f"{args.gpu_memory_utilization:g}"]
    if args.max_num_seqs is not None:
        command += ["--max-num-seqs", str(args.max_num_seqs)]
    if location.kind == "remote" and not _has_flag(args.extra_args, "--load-format"):
        # vLLM streams safetensors straight from object storage this way.
        command += ["--load-format", "runai_streamer"]
    command += list(args.extra_args)
    return command


def build_vllm_env(
    env: Mapping[str, str], model: ModelSpec, device: Device = Device.GPU
) -> dict[str, str]:
    """vLLM's environment: ours (HF_TOKEN included, from the Secret), plus defaults.

    Nothing here is logged: HF_TOKEN must never reach a log line.
    """
    out = dict(env)
    # A worker has no business phoning home, and many clusters can't.
    out.setdefault("VLLM_NO_USAGE_STATS", "1")
    out.setdefault("DO_NOT_TRACK", "1")
    # vLLM's engine core is a multiprocessing "spawn" child started with
    # `python -c`, which puts the working directory first on sys.path; from
    # a source checkout our operator/ folder would shadow the stdlib.
    # Harmless in the image.
    out.setdefault("PYTHONSAFEPATH", "1")
    if model_location(model.source).kind == "local":
        out.setdefault("HF_HUB_OFFLINE", "1")
    if device is Device.CPU:
        if _has_flag(model.engine_args.extra_args, KV_CACHE_FLAG):
            out.pop(ENV_VLLM_CPU_KVCACHE_SPACE, None)
        else:
            out.setdefault(ENV_VLLM_CPU_KVCACHE_SPACE, str(DEFAULT_CPU_KVCACHE_GIB))
    return out


def local_model_fault(model: ModelSpec) -> str | None:
    """A local model path that does not exist: say so before vLLM spends a minute importing."""
    location = model_location(model.source)
    if location.kind == "local" and not os.path.exists(location.model):
        return f"model not found: {location.model} does not exist (is the volume mounted?)"
    return None


def build_simulated_command(
    model: ModelSpec, simulator: SimulatorSpec, host: str, port: int, control_fd: int | None
) -> list[str]:
    """The simulated engine as a child process, like vLLM.

    `-P` keeps the working directory off sys.path: run from the repository
    root, the `operator/` folder would shadow the standard library.
    """
    command = [
        sys.executable,
        "-P",
        "-m",
        "kubeinfer.worker.simulated",
        "--model-spec",
        model.model_dump_json(by_alias=True, exclude_none=True),
        "--simulator-spec",
        simulator.model_dump_json(by_alias=True, exclude_none=True),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if control_fd is not None:
        command += ["--control-fd", str(control_fd)]
    return command
