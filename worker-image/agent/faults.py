"""Fault injection for the simulated engine: one model for flags, the admin endpoint
and the control channel.

`POST /admin/faults` on the agent port takes a `FaultUpdate`; fields left
out keep their value. The engine-side part (`EngineFaults`) travels to the
simulated engine over the control channel; `gpuFault`/`xid`/`eccErrors`
go to the simulated GPU, so the agent's own NVML watcher sees them.
"""

from typing import Annotated

from kubeinfer.operator.api import SimulatorSpec
from kubeinfer.operator.api.base import ApiModel
from pydantic import Field


class EngineFaults(ApiModel):
    """What the simulated engine does wrong, now."""

    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    added_latency_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    hang: bool = False
    # Counted from when the setting arrives; None = never.
    crash_after_requests: Annotated[int | None, Field(ge=1)] = None
    gpu_fault_after_requests: Annotated[int | None, Field(ge=1)] = None

    @classmethod
    def from_simulator(cls, spec: SimulatorSpec) -> "EngineFaults":
        return cls(
            error_rate=spec.error_rate,
            added_latency_ms=spec.added_latency_ms,
            crash_after_requests=spec.crash_after_requests,
            gpu_fault_after_requests=spec.gpu_fault_after_requests,
        )


class FaultUpdate(ApiModel):
    """The body of `POST /admin/faults`; every field is optional."""

    error_rate: Annotated[float | None, Field(ge=0, le=1)] = None
    added_latency_ms: Annotated[float | None, Field(ge=0, le=600_000)] = None
    hang: bool | None = None
    crash_after_requests: Annotated[int | None, Field(ge=1)] = None
    gpu_fault_after_requests: Annotated[int | None, Field(ge=1)] = None
    # Applied to the simulated GPU at once.
    gpu_fault: bool = False
    xid: Annotated[int, Field(ge=1, le=1000)] = 79
    ecc_errors: Annotated[int, Field(ge=0, le=1_000_000)] = 0

    def engine_changes(self) -> dict[str, object]:
        """The engine-side fields that were given (python names)."""
        names = EngineFaults.model_fields.keys()
        return {name: getattr(self, name) for name in self.model_fields_set if name in names}


def apply_update(current: EngineFaults, update: FaultUpdate) -> EngineFaults:
    return current.model_copy(update=update.engine_changes())
