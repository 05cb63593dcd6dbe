"""The admin endpoint's fault model: partial updates, camelCase, strict."""

import pytest
from kubeinfer.operator.api import SimulatorSpec
from kubeinfer.worker.faults import EngineFaults, FaultUpdate, apply_update
from pydantic import ValidationError


def test_from_simulator_spec() -> None:
    spec = SimulatorSpec(errorRate=0.1, addedLatencyMs=5, crashAfterRequests=3)
    faults = EngineFaults.from_simulator(spec)
    assert (faults.error_rate, faults.added_latency_ms, faults.crash_after_requests) == (0.1, 5, 3)
    assert faults.hang is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"errorRate": 0.5}', {"error_rate": 0.5, "added_latency_ms": 10.0}),
        ('{"hang": true}', {"hang": True, "error_rate": 0.0}),
        ('{"crashAfterRequests": null}', {"crash_after_requests": None}),
        ("{}", {"error_rate": 0.0, "added_latency_ms": 10.0, "crash_after_requests": 4}),
        # GPU faults do not change engine settings.
        ('{"gpuFault": true, "xid": 48}', {"error_rate": 0.0, "hang": False}),
    ],
)
def test_partial_updates(body: str, expected: dict[str, object]) -> None:
    current = EngineFaults(added_latency_ms=10, crash_after_requests=4)
    updated = apply_update(current, FaultUpdate.model_validate_json(body))
    for name, value in expected.items():
        assert getattr(updated, name) == value


@pytest.mark.parametrize(
    "body", ['{"errorRate": 2}', '{"bogus": 1}', '{"crashAfterRequests": 0}', '{"xid": 0}']
)
def test_invalid(body: str) -> None:
    with pytest.raises(ValidationError):
        FaultUpdate.model_validate_json(body)
