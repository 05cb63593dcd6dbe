"""Spec helpers for the operator's unit tests (imported by basename)."""

from typing import Any

from kubeinfer.operator.api import InferenceServiceSpec, parse_spec


def make_spec(**overrides: Any) -> InferenceServiceSpec:
    """A valid spec with two replicas; top-level fields replaced by ``overrides``."""
    raw: dict[str, Any] = {"model": {"name": "m", "source": "org/model-7b"}, "replicas": 2}
    raw.update(overrides)
    return parse_spec(raw)
