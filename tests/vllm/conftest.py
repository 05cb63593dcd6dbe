"""Fixtures for tests against real vLLM (its CPU build) with the tiny model.

The vLLM virtualenv and the model are built on first use (`make test`
builds them before pytest runs; see tests/localcluster/realvllm). When
they cannot be built the tests fail and say why: they are never skipped.
"""

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster.realvllm.env import (
    VllmEnv,
    VllmEnvError,
    ensure_tiny_model,
    ensure_vllm_env,
)
from kubeinfer.localcluster.realvllm.server import VllmServer


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def vllm_env() -> VllmEnv:
    try:
        return ensure_vllm_env(_progress)
    except VllmEnvError as error:
        pytest.fail(f"real vLLM is not available: {error}")


@pytest.fixture(scope="session")
def tiny_model(vllm_env: VllmEnv) -> Path:
    try:
        return ensure_tiny_model(vllm_env, _progress)
    except VllmEnvError as error:
        pytest.fail(f"the tiny model could not be made: {error}")


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
