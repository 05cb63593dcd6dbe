"""vLLM servers for tests against real vLLM (its CPU build) with the tiny model.

`vllm_env` and `tiny_model` come from kubeinfer.localcluster.realvllm.fixtures.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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
