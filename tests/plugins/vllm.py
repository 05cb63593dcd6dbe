"""pytest fixtures for real vLLM: the virtualenv and the tiny model (session).

Built on first use (`make test` builds them before pytest runs). When they
cannot be built, the tests that need them fail and say why: never skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from kubeinfer.localcluster.realvllm.env import (
    VllmEnv,
    VllmEnvError,
    ensure_tiny_model,
    ensure_vllm_env,
)


def _progress(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def vllm_env() -> VllmEnv:
    try:
        return ensure_vllm_env(_progress)
    except VllmEnvError as error:
        pytest.fail(f"real vLLM is not available: {error}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_model(vllm_env: VllmEnv) -> Path:
    try:
        return ensure_tiny_model(vllm_env, _progress)
    except VllmEnvError as error:
        pytest.fail(f"the tiny model could not be made: {error}", pytrace=False)
