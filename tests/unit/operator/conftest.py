"""Helpers for the operator's unit tests: real models, real validators."""

from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from kubeinfer.operator.api import ObjectMeta
from kubeinfer.operator.builders.common import Images

KUBERNETES_VERSION = "1.36.0"


def assert_valid_manifest(manifest: dict[str, Any]) -> None:
    """Validate against the Kubernetes OpenAPI schema (strict: no unknown fields)."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.fixture
def valid_manifest() -> Callable[[dict[str, Any]], None]:
    return assert_valid_manifest


@pytest.fixture
def meta() -> ObjectMeta:
    return ObjectMeta(name="llm", namespace="team-a", uid="0b9c-uid")


@pytest.fixture
def images() -> Images:
    return Images(
        worker="ghcr.io/kubeinfer/worker:test",
        worker_cpu="ghcr.io/kubeinfer/worker-cpu:test",
        router="ghcr.io/kubeinfer/router:test",
    )
