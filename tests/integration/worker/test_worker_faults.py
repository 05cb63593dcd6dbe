"""Faults end-to-end: injected into the simulated engine and GPU, seen by the agent.

A simulated GPU fault travels the real path: simulated NVML device ->
NVML adapter -> agent watcher -> not ready -> engine stopped -> exit code
and termination message.
"""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from worker_process import TINY_MODEL, Worker, http, listening, wait_for

GPU_FAULT_EXIT = 4
ENGINE_EXIT = 5
STARTUP_EXIT = 3
USAGE_EXIT = 2


def complete(worker: Worker, **body: Any) -> tuple[int, dict[str, Any]]:
    status, raw = http(worker.url + "/v1/completions", {"prompt": "x", "max_tokens": 2, **body})
    return status, json.loads(raw)


def metric(worker: Worker, sample: str) -> float | None:
    _, raw = http(worker.agent_url + "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_admin_gpu_fault(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    worker.faults(gpuFault=True)
    assert worker.wait_exit(15) == GPU_FAULT_EXIT
    assert worker.termination_message() == "GPU lost: Xid 79 (GPU has fallen off the bus)"


def test_gpu_fault_after_requests(start_worker: Any) -> None:
    worker = start_worker(simulator={"ttftMs": 1, "tpotMs": 1, "gpuFaultAfterRequests": 2})
    worker.wait_ready()
    assert complete(worker)[0] == 200
    assert worker.is_ready()
    assert complete(worker)[0] == 200
    assert worker.wait_exit(15) == GPU_FAULT_EXIT
    assert worker.termination_message() == "GPU lost: Xid 79 (GPU has fallen off the bus)"


def test_not_ready_before_exit(start_worker: Any) -> None:
    # A long drain cannot delay a GPU fault: the engine is stopped at once.
    worker = start_worker(args=("--engine-stop-seconds", "5", "--drain-seconds", "60"))
    worker.wait_ready()
    worker.faults(gpuFault=True, xid=48)

    def failed_or_gone() -> bool:
        try:
            status, body = worker.ready()
        except OSError:
            return True
        return status == 503 and body["reason"] == "GPU fault: Xid 48 (double-bit ECC error)"

    wait_for(failed_or_gone, 10, "/ready to report the fault")
    assert worker.wait_exit(15) == GPU_FAULT_EXIT


def test_application_xid_is_counted_not_fatal(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    worker.faults(gpuFault=True, xid=13)

    def counted() -> bool:
        _, raw = http(worker.agent_url + "/gpu")
        return bool(json.loads(raw)["xidEvents"] == {"13": 1})

    wait_for(counted, 10, "the Xid to be counted")
    gpu = json.loads(http(worker.agent_url + "/gpu")[1])
    assert gpu["healthy"] is True
    assert gpu["simulated"] is True
    sample = f'kubeinfer_gpu_xid_events_total{{gpu="{gpu["uuid"]}",xid="13"}}'
    assert metric(worker, sample) == 1
    assert worker.is_ready()


def test_uncorrectable_ecc_error(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    worker.faults(eccErrors=2)
    assert worker.wait_exit(15) == GPU_FAULT_EXIT
    assert worker.termination_message() in (
        "GPU fault: uncorrectable (double-bit) ECC error",  # the NVML event came first
        "GPU fault: 2 uncorrectable ECC errors since start",  # the counter was read first
    )


def test_hang_is_a_stuck_gpu(start_worker: Any) -> None:
    worker = start_worker(args=("--stuck-seconds", "1"))
    worker.wait_ready()
    worker.faults(hang=True)
    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(
            http, worker.url + "/v1/completions", {"prompt": "x", "max_tokens": 5, "stream": True}
        )
        assert worker.wait_exit(20) == GPU_FAULT_EXIT
        hung.result(10)
    message = worker.termination_message()
    assert message is not None
    assert message.startswith("GPU stuck: 0% utilisation for ")
    assert message.endswith(" with 1 request running")


def test_error_rate_and_added_latency(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    assert worker.faults(errorRate=1.0)["errorRate"] == 1.0
    status, body = complete(worker)
    assert status == 500
    assert body["error"]["type"] == "InternalServerError"
    worker.faults(errorRate=0.0, addedLatencyMs=300)
    started = time.monotonic()
    assert complete(worker)[0] == 200
    assert time.monotonic() - started >= 0.3
    faults = json.loads(http(worker.agent_url + "/admin/faults")[1])
    assert faults == {
        "errorRate": 0.0, "addedLatencyMs": 300.0, "hang": False,
        "crashAfterRequests": None, "gpuFaultAfterRequests": None,
    }  # fmt: skip


def test_admin_rejects_bad_input(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    status, raw = http(worker.agent_url + "/admin/faults", {"errorRate": 7})
    assert status == 400
    assert "errorRate" in json.loads(raw)["error"]["message"]
    status, _ = http(worker.agent_url + "/admin/faults", raw=b"x" * 20_000)
    assert status == 413


def test_crash_after_requests_via_admin(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    worker.faults(crashAfterRequests=1)
    assert complete(worker)[0] == 200
    assert worker.wait_exit(15) == ENGINE_EXIT
    assert worker.termination_message() == (
        "engine core died while serving: EngineDeadError: simulated crash (fault injection)"
    )


def test_engine_killed(start_worker: Any) -> None:
    worker = start_worker()
    worker.wait_ready()
    os.kill(worker.engine_pid(), signal.SIGKILL)
    assert worker.wait_exit(15) == ENGINE_EXIT
    assert worker.termination_message() == (
        "engine killed by SIGKILL while serving (out of memory? check worker.resources.memory)"
    )


def test_model_does_not_fit_the_gpu(start_worker: Any) -> None:
    worker = start_worker(
        model={**TINY_MODEL, "vramGiB": 40}, env={"KUBEINFER_SIM_GPU_MEMORY_GIB": "24"}
    )
    assert worker.wait_exit(15) == STARTUP_EXIT
    assert worker.termination_message() == (
        "model does not fit: it needs about 40.0 GiB, vLLM may use 21.6 GiB of this "
        "NVIDIA H100 80GB HBM3 (simulated) (24.0 GiB x gpuMemoryUtilization 0.9)"
    )


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        # No GPU on a machine without NVIDIA's driver: vLLM is never started.
        ({"engine": "vllm"}, STARTUP_EXIT, "no GPU: NVML is not available"),
        (
            {"engine": "vllm", "model": {"name": "m", "source": "/nonexistent/weights"}},
            STARTUP_EXIT,
            "model not found: /nonexistent/weights does not exist (is the volume mounted?)",
        ),
        (
            {"engine": "vllm", "model": {**TINY_MODEL, "engineArgs": {"extraArgs": ["--port=1"]}}},
            USAGE_EXIT,
            "invalid arguments: invalid --model-spec: "
            "engineArgs: engineArgs.extraArgs may not set --port: the worker sets it",
        ),
        ({"model": {"name": "m"}}, USAGE_EXIT, "invalid arguments: invalid --model-spec: source"),
        ({"engine": "tgi"}, USAGE_EXIT, "invalid arguments (see the container log)"),
    ],
)
def test_start_up_failures(
    start_worker: Any, options: dict[str, Any], code: int, message: str
) -> None:
    worker = start_worker(**options)
    assert worker.wait_exit(15) == code
    assert (worker.termination_message() or "").startswith(message)


def test_engine_dies_with_the_agent(start_worker: Any) -> None:
    # The engine has a session of its own (a group SIGTERM must not reach it
    # before the drain), so only its parent-death signal ties it to the agent.
    worker = start_worker()
    worker.wait_ready()
    engine = worker.engine_pid()
    worker.process.send_signal(signal.SIGKILL)
    worker.wait_exit(10)

    def engine_gone() -> bool:
        try:
            os.kill(engine, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{engine}/stat").read_text().split()[2] == "Z"

    wait_for(engine_gone, 10, "the engine to die with the agent")
    # The listener closes as the engine exits; poll rather than race it.
    wait_for(lambda: not listening(worker.port), 5, "the engine's port to close")
