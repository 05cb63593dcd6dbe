"""vLLM servers for tests against real vLLM (its CPU build) with the tiny model.

`vllm_env` and `tiny_model` come from tests/plugins/vllm.py.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.realvllm import rawhttp
from kubeinfer.localcluster.realvllm.env import VllmEnv
from kubeinfer.localcluster.realvllm.server import VllmServer


@pytest.fixture
def start_vllm(
    vllm_env: VllmEnv, tiny_model: Path, tmp_path: Path
) -> Iterator[Callable[..., VllmServer]]:
    """Start a vLLM server (not waited for); every one is stopped at the end of the test."""
    servers: list[VllmServer] = []

    def start(**options: Any) -> VllmServer:
        log = tmp_path / f"vllm-{len(servers)}.log"
        server = VllmServer.start(vllm_env, tiny_model, log, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=5)


@pytest.fixture(scope="session")
def shared_vllm(
    vllm_env: VllmEnv, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """One ready vLLM server for tests that only send requests."""
    log = tmp_path_factory.mktemp("shared-vllm") / "vllm.log"
    server = VllmServer.start(vllm_env, tiny_model, log)
    server.wait_ready()
    yield server
    server.stop(grace_s=5)


# The simulated engine as the worker starts it (its own process), for
# the comparison with real vLLM. Same served name and max_model_len.
SIMULATED_MODEL = {"name": "tiny", "source": "org/tiny", "engineArgs": {"maxModelLen": 512}}
ENGINE_START_DEADLINE_S = 30.0


@pytest.fixture(scope="session")
def simulated_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(host, port) of a running `python -m kubeinfer.worker.simulated`."""
    host, port = "127.0.0.1", free_port()
    log = tmp_path_factory.mktemp("simulated-engine") / "engine.log"
    command = [
        sys.executable, "-P", "-m", "kubeinfer.worker.simulated",
        "--model-spec", json.dumps(SIMULATED_MODEL),
        "--simulator-spec", json.dumps({"ttftMs": 2, "tpotMs": 1, "seed": 42}),
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        engine = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  cwd=log.parent, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + ENGINE_START_DEADLINE_S
        while rawhttp.request(host, port, "GET", "/health", timeout_s=5).status != 200:
            if engine.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the simulated engine did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield host, port
    finally:
        engine.kill()
        engine.wait(10)
