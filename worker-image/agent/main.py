"""`kubeinfer-worker`: check the GPU, start the engine, watch it, drain, explain the exit.

With --device cpu (vLLM's CPU backend, gpu.count 0) there is no GPU to
check: NVML is never loaded. With a GPU (the default) NVML is mandatory.

Exit status and the one-line reason in the termination log are described
in kubeinfer.worker.failures.ExitCode and docs/worker.md.
"""

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from kubeinfer.operator.api import Engine
from kubeinfer.operator.api.constants import DEFAULT_TERMINATION_LOG, ENV_TERMINATION_LOG
from kubeinfer.operator.api.exits import ExitCode
from kubeinfer.worker.agent import Agent, Outcome, WatchedGpu
from kubeinfer.worker.agenthttp import agent_app
from kubeinfer.worker.config import ConfigError, Device, WorkerConfig, parse_worker_args
from kubeinfer.worker.failures import write_termination_message
from kubeinfer.worker.gpuhealth import precheck_fault, service_fault
from kubeinfer.worker.launcher import (
    LaunchError,
    build_simulated_command,
    build_vllm_command,
    build_vllm_env,
    local_model_fault,
)
from kubeinfer.worker.nvml import DeviceSelector, Gpu, GpuError, NvmlLibrary, select_device
from kubeinfer.worker.simnvml import SimulatedNvml

log = logging.getLogger("kubeinfer.worker")

# The simulated GPU's memory (GiB); 80 unless set, to try a model that
# does not fit without a real GPU.
ENV_SIM_GPU_MEMORY_GIB = "KUBEINFER_SIM_GPU_MEMORY_GIB"


def _open_gpu(config: WorkerConfig, env: Mapping[str, str]) -> WatchedGpu | None:
    """The GPU behind the NVML adapter: real, or simulated for the simulated
    engine; None for a worker without a GPU (--device cpu).

    Raises GpuError (NoGpuError when a GPU is wanted and there is none).
    """
    if config.device is Device.CPU:
        return None
    simulated: SimulatedNvml | None = None
    if config.engine is Engine.SIMULATED:
        memory = float(env.get(ENV_SIM_GPU_MEMORY_GIB, "80"))
        simulated = SimulatedNvml.one_gpu(
            memory_total_gib=memory, seed=f"{config.host}:{config.port}"
        )
        gpu = Gpu.open(simulated, DeviceSelector())
    else:
        import pynvml

        library: NvmlLibrary = pynvml
        gpu = Gpu.open(library, select_device(env))
    try:
        return WatchedGpu(gpu, gpu.snapshot(time.time()), simulated)
    except GpuError:
        gpu.close()
        raise


def _engine_command(
    config: WorkerConfig, env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Raises LaunchError."""
    if config.engine is Engine.SIMULATED:
        command = build_simulated_command(
            config.model, config.simulator, config.host, config.port, control_fd=None
        )
        return command, dict(env)
    command = build_vllm_command(config.model, config.host, config.port, config.device)
    return command, build_vllm_env(env, config.model, config.device)


def run_worker(config: WorkerConfig, env: Mapping[str, str]) -> Outcome:
    """Everything after argument parsing; returns how the worker ends."""
    try:
        command, engine_env = _engine_command(config, env)
    except LaunchError as error:
        return Outcome(ExitCode.USAGE, f"invalid model spec: {error}")
    missing = local_model_fault(config.model) if config.engine is Engine.VLLM else None
    if missing is not None:
        return Outcome(ExitCode.STARTUP, missing)
    try:
        gpu = _open_gpu(config, env)
    except GpuError as error:
        return Outcome(ExitCode.STARTUP, str(error))
    if gpu is None:
        log.info("no GPU (--device cpu): vLLM's CPU backend, no NVML checks")
    else:
        outcome = _precheck(gpu, config)
        if outcome is not None:
            gpu.nvml.close()
            return outcome
    agent = Agent(config, gpu, command, engine_env)
    try:
        return asyncio.run(agent.run(agent_app(agent)))
    finally:
        if gpu is not None:
            gpu.nvml.close()


def _precheck(gpu: WatchedGpu, config: WorkerConfig) -> Outcome | None:
    """Log the GPU; why the worker can't start on it, or None."""
    baseline = gpu.baseline
    log.info(
        "GPU %s %s: %.1f of %.1f GiB free",
        baseline.name,
        baseline.uuid,
        baseline.memory_free_bytes / 1024**3,
        baseline.memory_total_bytes / 1024**3,
    )
    broken = service_fault(baseline)
    if broken is not None:
        return Outcome(ExitCode.GPU_FAULT, broken)
    fault = precheck_fault(baseline, config.model)
    return None if fault is None else Outcome(ExitCode.STARTUP, fault)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname)s %(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    env = dict(os.environ)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_worker_args(args, env)
    except ConfigError as error:
        reason = f"invalid arguments: {error}"
    except SystemExit as exited:  # argparse has printed the usage and the problem
        if exited.code in (0, None):
            raise
        reason = "invalid arguments (see the container log)"
    else:
        return _run(config, env)
    log.error("%s", reason)
    write_termination_message(_termination_log(args, env), reason)
    return ExitCode.USAGE


def _termination_log(args: Sequence[str], env: Mapping[str, str]) -> str:
    """--termination-log when the rest of the command line could not be parsed."""
    for index, arg in enumerate(args):
        if arg.startswith("--termination-log="):
            return arg.split("=", 1)[1]
        if arg == "--termination-log" and index + 1 < len(args):
            return args[index + 1]
    return env.get(ENV_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG


def _run(config: WorkerConfig, env: Mapping[str, str]) -> int:
    try:
        outcome = run_worker(config, env)
    except Exception as error:  # the last line of defence: say why before dying
        log.exception("agent failed")
        outcome = Outcome(ExitCode.INTERNAL, f"worker agent error: {error!r}")
    if outcome.reason is not None:
        if outcome.code is not ExitCode.OK:
            log.error("exiting (%d): %s", outcome.code, outcome.reason)
        else:
            log.info("%s", outcome.reason)
        write_termination_message(config.termination_log, outcome.reason)
    return int(outcome.code)
