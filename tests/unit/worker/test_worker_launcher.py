"""The engine command lines: each engine arg becomes the right vLLM flag."""

import sys

import pytest
from kubeinfer.operator.api import ModelSpec, SimulatorSpec
from kubeinfer.worker.config import Device
from kubeinfer.worker.launcher import (
    LaunchError,
    build_simulated_command,
    build_vllm_command,
    build_vllm_env,
    local_model_fault,
    model_location,
)

BASE = ["vllm", "serve"]


def model(**fields: object) -> ModelSpec:
    raw: dict[str, object] = {"name": "llama", "source": "meta-llama/Llama-3.1-8B-Instruct"}
    raw.update(fields)
    return ModelSpec.model_validate(raw)


def tail(command: list[str]) -> list[str]:
    """The command after `vllm serve MODEL --host H --port P --served-model-name N`."""
    return command[9:]


def engine_flags(command: list[str]) -> list[str]:
    """tail() without --gpu-memory-utilization, which is always there."""
    rest = tail(command)
    at = rest.index("--gpu-memory-utilization")
    return rest[:at] + rest[at + 2 :]


class TestVllmCommand:
    def test_minimal(self) -> None:
        assert build_vllm_command(model(), "0.0.0.0", 8000) == [
            "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct",
            "--host", "0.0.0.0", "--port", "8000",
            "--served-model-name", "llama",
            "--gpu-memory-utilization", "0.9",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("fields", "flags"),
        [
            ({"engineArgs": {"maxModelLen": 8192}}, ["--max-model-len", "8192"]),
            ({"engineArgs": {"dtype": "bfloat16"}}, ["--dtype", "bfloat16"]),
            ({"engineArgs": {"dtype": "auto"}}, []),
            ({"engineArgs": {"gpuMemoryUtilization": 0.85}}, []),  # checked below
            ({"engineArgs": {"maxNumSeqs": 128}}, ["--max-num-seqs", "128"]),
            (
                {"engineArgs": {"extraArgs": ["--enable-prefix-caching", "--seed=7"]}},
                ["--enable-prefix-caching", "--seed=7"],
            ),
            ({"revision": "a1b2c3"}, ["--revision", "a1b2c3"]),
        ],
    )
    def test_engine_args(self, fields: dict[str, object], flags: list[str]) -> None:
        assert engine_flags(build_vllm_command(model(**fields), "0.0.0.0", 8000)) == flags

    def test_gpu_memory_utilization(self) -> None:
        command = build_vllm_command(
            model(engineArgs={"gpuMemoryUtilization": 0.85}), "0.0.0.0", 8000
        )
        assert command[command.index("--gpu-memory-utilization") + 1] == "0.85"

    @pytest.mark.parametrize(
        ("source", "expected_model", "extra"),
        [
            ("hf://org/model", "org/model", ["--revision", "main"]),
            ("/mnt/models/llama", "/mnt/models/llama", []),
            ("s3://bucket/llama", "s3://bucket/llama", ["--load-format", "runai_streamer"]),
            ("gs://bucket/llama", "gs://bucket/llama", ["--load-format", "runai_streamer"]),
        ],
    )
    def test_sources(self, source: str, expected_model: str, extra: list[str]) -> None:
        command = build_vllm_command(model(source=source, revision="main"), "::", 9000)
        assert command[2] == expected_model
        # A revision only means something on the hub.
        assert ("--revision" in command) == (source.startswith("hf://"))
        assert engine_flags(command) == extra

    def test_load_format_from_extra_args_wins(self) -> None:
        spec = model(source="s3://b/m", engineArgs={"extraArgs": ["--load-format", "safetensors"]})
        command = build_vllm_command(spec, "0.0.0.0", 8000)
        assert command.count("--load-format") == 1

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            (
                {"engineArgs": {"maxModelLen": 4096, "extraArgs": ["--max-model-len", "8192"]}},
                "engineArgs.maxModelLen already sets",
            ),
            (
                {"engineArgs": {"extraArgs": ["--gpu-memory-utilization=0.5"]}},
                "engineArgs.gpuMemoryUtilization already sets",
            ),
            (
                {"revision": "v2", "engineArgs": {"extraArgs": ["--revision", "v1"]}},
                "model.revision",
            ),
        ],
    )
    def test_conflicts_with_fields(self, fields: dict[str, object], message: str) -> None:
        with pytest.raises(LaunchError, match=message):
            build_vllm_command(model(**fields), "0.0.0.0", 8000)

    def test_extra_args_without_field_are_allowed(self) -> None:
        spec = model(engineArgs={"extraArgs": ["--max-model-len", "8192", "--dtype", "half"]})
        assert tail(build_vllm_command(spec, "0.0.0.0", 8000))[-4:] == [
            "--max-model-len", "8192", "--dtype", "half",
        ]  # fmt: skip

    def test_pvc_must_be_resolved_by_the_operator(self) -> None:
        with pytest.raises(LaunchError, match="pvc:// must be mounted by the operator"):
            model_location("pvc://claim/llama")


class TestCpuDevice:
    @pytest.mark.parametrize(
        ("fields", "device", "utilization"),
        [
            ({}, Device.GPU, "0.9"),
            ({"engineArgs": {"gpuMemoryUtilization": 0.5}}, Device.GPU, "0.5"),
            ({}, Device.CPU, None),
            # Not used on CPU (the KV cache size comes from the environment).
            ({"engineArgs": {"gpuMemoryUtilization": 0.5}}, Device.CPU, None),
        ],
    )
    def test_gpu_memory_utilization_only_on_gpu(
        self, fields: dict[str, object], device: Device, utilization: str | None
    ) -> None:
        command = build_vllm_command(model(**fields), "0.0.0.0", 8000, device)
        if utilization is None:
            assert "--gpu-memory-utilization" not in command
        else:
            assert command[command.index("--gpu-memory-utilization") + 1] == utilization

    def test_other_flags_are_the_same_as_on_gpu(self) -> None:
        spec = model(engineArgs={"maxModelLen": 2048, "dtype": "bfloat16", "maxNumSeqs": 8})
        on_gpu = engine_flags(build_vllm_command(spec, "0.0.0.0", 8000, Device.GPU))
        assert tail(build_vllm_command(spec, "0.0.0.0", 8000, Device.CPU)) == on_gpu

    def test_extra_args_rules_still_apply(self) -> None:
        spec = model(engineArgs={"extraArgs": ["--gpu-memory-utilization=0.5"]})
        with pytest.raises(LaunchError, match=r"engineArgs\.gpuMemoryUtilization already"):
            build_vllm_command(spec, "0.0.0.0", 8000, Device.CPU)

    @pytest.mark.parametrize(
        ("env", "device", "kv_cache"),
        [
            ({}, Device.CPU, "4"),  # a worker run by hand
            ({"VLLM_CPU_KVCACHE_SPACE": "13"}, Device.CPU, "13"),  # the operator's value
            ({}, Device.GPU, None),
            ({"VLLM_CPU_KVCACHE_SPACE": "13"}, Device.GPU, "13"),  # passed through untouched
        ],
    )
    def test_kv_cache_space(
        self, env: dict[str, str], device: Device, kv_cache: str | None
    ) -> None:
        assert build_vllm_env(env, model(), device).get("VLLM_CPU_KVCACHE_SPACE") == kv_cache

    @pytest.mark.parametrize(
        "flag", [["--kv-cache-memory-bytes", "8G"], ["--kv_cache_memory_bytes=8G"]]
    )
    def test_explicit_kv_cache_flag_wins(self, flag: list[str]) -> None:
        spec = model(engineArgs={"extraArgs": flag})
        env = build_vllm_env({"VLLM_CPU_KVCACHE_SPACE": "13"}, spec, Device.CPU)
        assert "VLLM_CPU_KVCACHE_SPACE" not in env
        assert tail(build_vllm_command(spec, "0.0.0.0", 8000, Device.CPU)) == flag


class TestEnvironment:
    def test_token_passes_through_and_defaults_are_set(self) -> None:
        env = build_vllm_env({"HF_TOKEN": "hf_x", "PATH": "/bin"}, model())
        assert env["HF_TOKEN"] == "hf_x"
        assert env["VLLM_NO_USAGE_STATS"] == "1"
        assert "HF_HUB_OFFLINE" not in env
        # vLLM's spawned engine core must not import operator/ from the cwd.
        assert env["PYTHONSAFEPATH"] == "1"

    def test_local_weights_stay_offline(self) -> None:
        assert build_vllm_env({}, model(source="/mnt/models/x"))["HF_HUB_OFFLINE"] == "1"

    def test_user_settings_win(self) -> None:
        assert build_vllm_env({"VLLM_NO_USAGE_STATS": "0"}, model())["VLLM_NO_USAGE_STATS"] == "0"


def test_local_model_fault(tmp_path: object) -> None:
    assert local_model_fault(model(source="/nonexistent/llama")) == (
        "model not found: /nonexistent/llama does not exist (is the volume mounted?)"
    )
    assert local_model_fault(model(source=str(tmp_path))) is None
    assert local_model_fault(model()) is None  # hub ids are vLLM's to find


def test_simulated_command() -> None:
    command = build_simulated_command(
        model(), SimulatorSpec(ttftMs=5), "127.0.0.1", 8000, control_fd=7
    )
    assert command[:4] == [sys.executable, "-P", "-m", "kubeinfer.worker.simulated"]
    assert command[-2:] == ["--control-fd", "7"]
    spec = SimulatorSpec.model_validate_json(command[command.index("--simulator-spec") + 1])
    assert spec.ttft_ms == 5
