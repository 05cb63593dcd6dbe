"""The worker's command line, as the operator's pod builder emits it."""

import pytest
from kubeinfer.operator.api import Engine
from kubeinfer.worker.config import ConfigError, Device, WorkerConfig, parse_worker_args

MODEL = '{"name":"llama","source":"org/llama-8b","engineArgs":{"maxModelLen":4096}}'


def parse(*argv: str, **env: str) -> WorkerConfig:
    return parse_worker_args(list(argv), env)


def test_defaults() -> None:
    config = parse("--engine", "vllm", f"--model-spec={MODEL}")
    assert config.engine is Engine.VLLM
    assert config.model.engine_args.max_model_len == 4096
    assert (config.host, config.port, config.agent_port) == ("0.0.0.0", 8000, 8081)
    assert config.drain_seconds == 30
    assert config.termination_log == "/dev/termination-log"
    assert config.probe_host == "127.0.0.1"
    assert config.device is Device.GPU  # NVML stays mandatory unless asked otherwise


@pytest.mark.parametrize(
    ("argv", "device"),
    [
        ([], Device.GPU),
        (["--device", "gpu"], Device.GPU),
        (["--device=cpu"], Device.CPU),
        (["--engine", "simulated", "--device", "cpu"], Device.CPU),
    ],
)
def test_device(argv: list[str], device: Device) -> None:
    config = parse("--engine", "vllm", f"--model-spec={MODEL}", *argv)
    assert config.device is device


def test_unknown_device_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--engine", "vllm", "--model-spec", MODEL, "--device", "tpu")
    assert exited.value.code == 2


def test_environment_fallbacks() -> None:
    config = parse(
        "--engine",
        "simulated",
        KUBEINFER_MODEL_SPEC=MODEL,
        KUBEINFER_SIMULATOR_SPEC='{"tpotMs": 1}',
        KUBEINFER_BIND_HOST="127.1.0.7",
        KUBEINFER_TERMINATION_LOG="/tmp/pod/termination",
    )
    assert config.model.name == "llama"
    assert config.simulator.tpot_ms == 1
    assert (config.host, config.probe_host) == ("127.1.0.7", "127.1.0.7")
    assert config.termination_log == "/tmp/pod/termination"


def test_flags_win_over_environment() -> None:
    config = parse(
        "--engine", "simulated", "--model-spec", MODEL, "--host", "127.0.0.1",
        "--port", "9000", "--agent-port", "9001", "--drain-seconds", "5",
        "--termination-log", "/tmp/t", KUBEINFER_BIND_HOST="127.1.0.7",
    )  # fmt: skip
    assert (config.host, config.port, config.agent_port) == ("127.0.0.1", 9000, 9001)
    assert (config.drain_seconds, config.termination_log) == (5, "/tmp/t")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--engine", "vllm"], "--model-spec .* is required"),
        (["--engine", "vllm", "--model-spec", "{"], "invalid --model-spec"),
        (["--engine", "vllm", "--model-spec", '{"name":"x"}'], "invalid --model-spec: source"),
        (
            ["--engine", "simulated", "--model-spec", MODEL, "--simulator-spec", '{"tpotMs":-1}'],
            "invalid --simulator-spec: tpotMs",
        ),
        (["--engine", "vllm", "--model-spec", MODEL, "--port", "0"], "--port must be a TCP port"),
        (["--engine", "vllm", "--model-spec", MODEL, "--agent-port", "8000"], "must differ"),
        (["--engine", "vllm", "--model-spec", MODEL, "--drain-seconds", "-1"], "not be negative"),
    ],
)
def test_invalid(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_worker_args(argv, {})


def test_unknown_engine_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--engine", "tgi", "--model-spec", MODEL)
    assert exited.value.code == 2
