"""Termination reasons: what a person reads in `kubectl describe pod`."""

import signal
from pathlib import Path

import pytest
from kubeinfer.worker.failures import (
    MAX_MESSAGE_BYTES,
    classify_engine_exit,
    write_termination_message,
)

SOURCE = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(
    ("lines", "code", "loaded", "reason"),
    [
        (
            ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."],
            1,
            False,
            "CUDA out of memory while loading",
        ),
        (
            ["RuntimeError: CUDA error: out of memory"],
            1,
            True,
            "CUDA out of memory while serving",
        ),
        (
            [
                "ERROR 11-22 04:40:39 [core.py:700] ValueError: Free memory on device (20.1/79.1 "
                "GiB) on startup is less than desired GPU memory utilization (0.9, 71.2 GiB)."
            ],
            1,
            False,
            "not enough GPU memory for the KV cache while loading: ValueError: Free memory on "
            "device (20.1/79.1 GiB) on startup is less than desired GPU memory utilization "
            "(0.9, 71.2 GiB).",
        ),
        (
            ["huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error."],
            1,
            False,
            f"model not found: {SOURCE}",
        ),
        (
            ["OSError: /mnt/models/x does not appear to have a file named config.json."],
            1,
            False,
            f"model not found: {SOURCE}",
        ),
        (
            ["huggingface_hub.errors.GatedRepoError: 401 Client Error."],
            1,
            False,
            f"model access denied: {SOURCE} (set model.secretRef to a Secret with a hub token)",
        ),
        (
            ["huggingface_hub.errors.RevisionNotFoundError: 404 Client Error."],
            1,
            False,
            f"model revision not found: {SOURCE}@v9",
        ),
        (
            ["vllm serve: error: unrecognized arguments: --no-such-flag"],
            2,
            False,
            "invalid vLLM flag in engineArgs.extraArgs: vllm serve: error: unrecognized "
            "arguments: --no-such-flag",
        ),
        (
            ["ERROR EngineDeadError: EngineCore encountered an issue."],
            1,
            True,
            "engine core died while serving: EngineDeadError: EngineCore encountered an issue.",
        ),
        (
            ["ValueError: max_model_len (131072) is larger than the model's max (8192)"],
            1,
            False,
            "invalid engine arguments: ValueError: max_model_len (131072) is larger than the "
            "model's max (8192)",
        ),
        ([], -signal.SIGKILL, True, "engine killed by SIGKILL while serving (out of memory? "
         "check worker.resources.memory)"),
        ([], -signal.SIGSEGV, False, "engine killed by SIGSEGV while loading"),
        (["loading...", "RuntimeError: something odd", "  File x.py"], 3, False,
         "engine exited with code 3 while loading: RuntimeError: something odd"),
        (["all fine"], 0, True, "engine exited with code 0 while serving"),
    ],
)  # fmt: skip
def test_classify_engine_exit(lines: list[str], code: int, loaded: bool, reason: str) -> None:
    assert classify_engine_exit(lines, code, loaded=loaded, source=SOURCE, revision="v9") == reason


def test_the_last_matching_line_wins_over_earlier_noise() -> None:
    lines = [
        "WARNING something about CUDA error handling",
        "torch.OutOfMemoryError: CUDA out of memory",
    ]
    assert classify_engine_exit(lines, 1, loaded=False, source=SOURCE) == (
        "CUDA out of memory while loading"
    )


class TestTerminationMessage:
    def test_one_line(self, tmp_path: Path) -> None:
        path = tmp_path / "termination-log"
        write_termination_message(str(path), "GPU lost:\n  Xid 79")
        assert path.read_text() == "GPU lost: Xid 79\n"

    def test_capped_at_kubernetes_limit(self, tmp_path: Path) -> None:
        path = tmp_path / "termination-log"
        write_termination_message(str(path), "x" * 10_000)
        assert len(path.read_bytes()) == MAX_MESSAGE_BYTES + 1

    def test_unwritable_path_is_not_fatal(self, tmp_path: Path) -> None:
        write_termination_message(str(tmp_path / "missing" / "log"), "whatever")
