"""Across the pod boundary, for every exit class: a real worker exits with it,
and the operator's own parsing and replacement rules decide what follows.

The worker's side is a real `kubeinfer-worker` process (simulated engine and
GPU). Between the two sits the kubelet, whose contract is Kubernetes': the
exit code and the termination-message file become the container's
`lastState.terminated` (our local runtime does the same, see
tests/localcluster/runtime/container.py). The operator's side is
`observe_pod` and `classify_failure`, unchanged.
"""

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.exits import ExitCode, GpuFault
from kubeinfer.operator.observe import NodeInfo, PodInfo, observe_pod
from kubeinfer.operator.replacement import CRASH_LOOP_RESTARTS, classify_failure
from worker_process import TINY_MODEL, Worker, http

NODES = {"gpu-0": NodeInfo("gpu-0", True, "NVIDIA H100 80GB HBM3", 81559)}


def stopped_on_request(start: Callable[..., Worker]) -> Worker:
    worker = start()
    worker.wait_ready()
    worker.process.send_signal(signal.SIGTERM)
    return worker


def agent_bug(start: Callable[..., Worker]) -> Worker:
    # The simulated GPU's size is read unchecked: a bad value is a crash of
    # the agent itself, caught by its last line of defence.
    return start(env={"KUBEINFER_SIM_GPU_MEMORY_GIB": "lots"})


def bad_usage(start: Callable[..., Worker]) -> Worker:
    return start(engine="tgi")


def does_not_fit(start: Callable[..., Worker]) -> Worker:
    return start(model={**TINY_MODEL, "vramGiB": 40}, env={"KUBEINFER_SIM_GPU_MEMORY_GIB": "24"})


def gpu_lost(start: Callable[..., Worker]) -> Worker:
    worker = start()
    worker.wait_ready()
    worker.faults(gpuFault=True)
    return worker


def gpu_stuck(start: Callable[..., Worker]) -> Worker:
    worker = start(args=("--stuck-seconds", "1"))
    worker.wait_ready()
    worker.faults(hang=True)
    # A streamed request that never gets a token: 0 % utilisation, 1 running.
    # The reader thread ends when the worker exits and its socket closes.
    threading.Thread(target=stream_quietly, args=(worker,), daemon=True).start()
    return worker


def stream_quietly(worker: Worker) -> None:
    with contextlib.suppress(OSError):
        http(worker.url + "/v1/completions", {"prompt": "x", "max_tokens": 5, "stream": True})


def engine_killed(start: Callable[..., Worker]) -> Worker:
    worker = start()
    worker.wait_ready()
    os.kill(worker.engine_pid(), signal.SIGKILL)
    return worker


Scenario = Callable[[Callable[..., Worker]], Worker]
SCENARIOS: list[tuple[ExitCode, Scenario]] = [
    (ExitCode.OK, stopped_on_request),
    (ExitCode.INTERNAL, agent_bug),
    (ExitCode.USAGE, bad_usage),
    (ExitCode.STARTUP, does_not_fit),
    (ExitCode.GPU_FAULT, gpu_lost),
    (ExitCode.GPU_FAULT, gpu_stuck),
    (ExitCode.ENGINE, engine_killed),
]


def test_every_exit_class_has_a_scenario() -> None:
    assert {code for code, _ in SCENARIOS} == set(ExitCode)


def pod_after_exit(worker: Worker, exit_code: int, restarts: int) -> PodInfo:
    """The worker pod as the API server shows it once the kubelet restarted
    the container (restartPolicy Always) after it exited."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Error",
        "message": worker.termination_message(),
    }
    return observe_pod(
        {
            "metadata": {
                "name": "chat-r1-0",
                "namespace": "ns",
                "labels": {c.LABEL_COMPONENT: c.COMPONENT_WORKER},
            },
            "spec": {
                "nodeName": "gpu-0",
                "containers": [
                    {"name": "worker", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "worker",
                        "restartCount": restarts,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": terminated},
                    }
                ],
            },
        }
    )


@pytest.mark.parametrize(
    ("code", "scenario"), SCENARIOS, ids=[scenario.__name__ for _, scenario in SCENARIOS]
)
def test_what_the_operator_does_after_each_exit_class(
    start_worker: Callable[..., Worker], code: ExitCode, scenario: Scenario
) -> None:
    worker = scenario(start_worker)
    assert worker.wait_exit(30) == code
    message = worker.termination_message()
    # A stop on request needs no reason; every failure leaves one.
    assert (message is None) == (code is ExitCode.OK), message

    first = pod_after_exit(worker, code, restarts=1)
    assert first.exit_code == code
    if code is ExitCode.GPU_FAULT:
        # The same GPU can't help: the pod moves at once, and says why.
        assert message is not None
        assert message.startswith(tuple(GpuFault))
        assert classify_failure(first, NODES) == message
        return
    # Anything else is restarted in place by the kubelet first ...
    assert first.gpu_fault is None
    assert classify_failure(first, NODES) is None
    # ... and replaced once it keeps failing (the crash-loop rule).
    looping = pod_after_exit(worker, code, restarts=CRASH_LOOP_RESTARTS)
    reason = classify_failure(looping, NODES)
    detail = "" if message is None else f": {message}"
    assert reason == f"crash loop ({CRASH_LOOP_RESTARTS} restarts){detail}"
