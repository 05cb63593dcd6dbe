"""`--device cpu` in real worker processes: no NVML anywhere, same serving life.

vLLM itself is not installed here, so the vLLM case shows how far the
worker gets without a GPU: past every GPU check, to starting `vllm`.
"""

import json
import signal
from typing import Any

from worker_process import http

ENGINE_EXIT = 5
STARTUP_EXIT = 3


def test_vllm_on_cpu_never_asks_nvml(start_worker: Any) -> None:
    # Without --device cpu this machine's missing driver stops the worker
    # first ("no GPU: NVML is not available", test_worker_faults).
    worker = start_worker(engine="vllm", args=("--device", "cpu"))
    assert worker.wait_exit(15) == ENGINE_EXIT
    assert (worker.termination_message() or "").startswith("cannot start the engine vllm")
    assert "no GPU (--device cpu)" in worker.logs()
    assert "NVML is not available" not in worker.logs()


def test_simulated_engine_on_cpu_serves_and_reports_no_gpu(start_worker: Any) -> None:
    worker = start_worker(args=("--device", "cpu"))
    worker.wait_ready()
    status, body = http(worker.url + "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert status == 200, body
    assert json.loads(body)["usage"]["completion_tokens"] == 2
    status, body = http(worker.agent_url + "/gpu")
    assert status == 404
    assert "no GPU" in json.loads(body)["error"]["message"]
    _, metrics = http(worker.agent_url + "/metrics")
    assert b"kubeinfer_worker_ready 1.0" in metrics
    assert b"kubeinfer_gpu" not in metrics
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait_exit(15) == 0
