"""The worker's command line: what the operator's pod builder emits.

    kubeinfer-worker --engine {vllm,simulated} --model-spec JSON
        [--device {gpu,cpu}] [--simulator-spec JSON] [--host H] [--port 8000]
        [--agent-port 8081] [--drain-seconds 30] [--termination-log PATH]

Specs are the API models' JSON (camelCase). They may also come from the
environment (KUBEINFER_MODEL_SPEC, KUBEINFER_SIMULATOR_SPEC), which keeps
long JSON out of `ps` and lets a pod template use a ConfigMap.
"""

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from kubeinfer.operator.api import Engine, ModelSpec, SimulatorSpec
from kubeinfer.operator.api.constants import (
    DEFAULT_TERMINATION_LOG,
    ENV_BIND_HOST,
    ENV_TERMINATION_LOG,
    WORKER_AGENT_PORT,
    WORKER_DEVICE_CPU,
    WORKER_DEVICE_GPU,
    WORKER_HTTP_PORT,
)
from kubeinfer.operator.api.resource import format_validation_error
from pydantic import ValidationError

ENV_MODEL_SPEC = "KUBEINFER_MODEL_SPEC"
ENV_SIMULATOR_SPEC = "KUBEINFER_SIMULATOR_SPEC"
DEFAULT_BIND_HOST = "0.0.0.0"

M = TypeVar("M", ModelSpec, SimulatorSpec)


class Device(StrEnum):
    """What the engine runs on."""

    GPU = WORKER_DEVICE_GPU  # one GPU, checked and watched through NVML (mandatory)
    CPU = WORKER_DEVICE_CPU  # no GPU: vLLM's CPU backend; NVML is never loaded


class ConfigError(ValueError):
    """The command line or a spec can never work; the message says which part."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the agent needs, validated."""

    engine: Engine
    model: ModelSpec
    simulator: SimulatorSpec
    host: str
    port: int
    agent_port: int
    drain_seconds: float
    termination_log: str
    device: Device = Device.GPU
    # GPU watch: how often NVML is read, and how long 0% utilisation with
    # requests running counts as a stuck GPU.
    gpu_poll_seconds: float = 1.0
    stuck_seconds: float = 120.0
    # How long a serving engine may fail /health before the worker gives up.
    unresponsive_seconds: float = 30.0
    # How long the engine gets to exit after SIGTERM before SIGKILL.
    engine_stop_seconds: float = 15.0

    @property
    def probe_host(self) -> str:
        """Where the agent reaches the engine: a wildcard bind means loopback."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeinfer-worker",
        description="Run one inference engine (vLLM or simulated) under the kubeinfer agent.",
    )
    parser.add_argument("--engine", required=True, choices=[e.value for e in Engine])
    parser.add_argument("--model-spec", help=f"ModelSpec JSON (default: ${ENV_MODEL_SPEC})")
    parser.add_argument(
        "--device",
        choices=[d.value for d in Device],
        default=Device.GPU.value,
        help="gpu (default; NVML must work) or cpu (vLLM's CPU backend, no GPU checks)",
    )
    parser.add_argument(
        "--simulator-spec", help=f"SimulatorSpec JSON (default: ${ENV_SIMULATOR_SPEC})"
    )
    parser.add_argument("--host", help=f"bind address (default: ${ENV_BIND_HOST} or 0.0.0.0)")
    parser.add_argument("--port", type=int, default=WORKER_HTTP_PORT, help="engine port")
    parser.add_argument("--agent-port", type=int, default=WORKER_AGENT_PORT, help="agent port")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, how long in-flight requests may finish",
    )
    parser.add_argument(
        "--termination-log",
        help=f"failure reason file (default: ${ENV_TERMINATION_LOG} or {DEFAULT_TERMINATION_LOG})",
    )
    parser.add_argument("--gpu-poll-seconds", type=float, default=1.0)
    parser.add_argument("--stuck-seconds", type=float, default=120.0)
    parser.add_argument("--unresponsive-seconds", type=float, default=30.0)
    parser.add_argument("--engine-stop-seconds", type=float, default=15.0)
    return parser


def _load_json_model(kind: type[M], flag: str, text: str | None) -> M:
    if text is None:
        return kind()
    try:
        return kind.model_validate_json(text)
    except ValidationError as error:
        raise ConfigError(f"invalid {flag}: {format_validation_error(error)}") from None


def parse_worker_args(argv: Sequence[str], env: Mapping[str, str]) -> WorkerConfig:
    """Parse the command line; spec JSON falls back to the environment.

    Raises ConfigError for a missing or invalid spec or an impossible value
    (argparse itself exits with status 2 on unknown flags).
    """
    args = _parser().parse_args(list(argv))
    model_json = args.model_spec if args.model_spec is not None else env.get(ENV_MODEL_SPEC)
    if not model_json:
        raise ConfigError(f"--model-spec (or ${ENV_MODEL_SPEC}) is required")
    model = _load_json_model(ModelSpec, "--model-spec", model_json)
    sim_json = args.simulator_spec
    if sim_json is None:
        sim_json = env.get(ENV_SIMULATOR_SPEC) or None
    simulator = _load_json_model(SimulatorSpec, "--simulator-spec", sim_json)
    for name in ("port", "agent_port"):
        value = getattr(args, name)
        if not 1 <= value <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} must be a TCP port, got {value}")
    if args.port == args.agent_port:
        raise ConfigError("--port and --agent-port must differ")
    for name in ("drain_seconds", "gpu_poll_seconds", "stuck_seconds", "unresponsive_seconds"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    host = args.host or env.get(ENV_BIND_HOST) or DEFAULT_BIND_HOST
    termination_log = (
        args.termination_log or env.get(ENV_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG
    )
    return WorkerConfig(
        engine=Engine(args.engine),
        model=model,
        simulator=simulator,
        host=host,
        port=args.port,
        agent_port=args.agent_port,
        drain_seconds=args.drain_seconds,
        termination_log=termination_log,
        device=Device(args.device),
        gpu_poll_seconds=max(args.gpu_poll_seconds, 0.05),
        stuck_seconds=args.stuck_seconds,
        unresponsive_seconds=args.unresponsive_seconds,
        engine_stop_seconds=max(args.engine_stop_seconds, 0.0),
    )
