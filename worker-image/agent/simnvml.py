# pynvml's function names are camelCase; the adapter keeps them.
# ruff: noqa: N802
"""A simulated GPU that speaks NVML, for the simulated engine.

It implements the part of pynvml that `kubeinfer.worker.nvml` uses, so a
simulated fault travels the same path as a real one: the adapter reads an
Xid event (or GPU_IS_LOST) and the agent's watcher decides what it means.

The simulated engine (a child process) tells the device what the "GPU" is
doing: memory taken once the model is loaded, the busy fraction of the last
second, an Xid when `gpuFaultAfterRequests` is reached. The admin endpoint
can inject a fault directly. Updates come from the event loop thread;
NVML reads and event waits come from the watcher thread.
"""

import hashlib
import threading
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from kubeinfer.worker.nvml import (
    EVENT_TYPE_DOUBLE_BIT_ECC,
    EVENT_TYPE_XID_CRITICAL,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_TIMEOUT,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
)

GIB = 1024**3
SIMULATED_GPU_NAME = "NVIDIA H100 80GB HBM3 (simulated)"
# Xid 79: "GPU has fallen off the bus"; afterwards NVML answers GPU_IS_LOST.
XID_FALLEN_OFF_BUS = 79


class SimulatedNvmlError(Exception):
    """pynvml.NVMLError's shape: the NVML return code in `.value`."""

    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class _Event:
    event_type: int
    xid: int


class SimulatedGpu:
    """The device's state plus pynvml-compatible functions reading it."""

    NVMLError = SimulatedNvmlError

    def __init__(self, *, memory_total_gib: float = 80.0, seed: str = "0"):
        self._cond = threading.Condition()
        self.memory_total_bytes = int(memory_total_gib * GIB)
        self.memory_used_bytes = 0
        self.utilization_percent = 0
        self.ecc_corrected = 0
        self.ecc_uncorrected = 0
        self.lost = False
        self.uuid = "GPU-" + _uuid_from(seed)
        self._events: deque[_Event] = deque()
        self._registered = 0

    # --- driven by the simulated engine and the admin endpoint -----------

    def set_memory_used(self, used_bytes: int) -> None:
        with self._cond:
            self.memory_used_bytes = max(0, min(used_bytes, self.memory_total_bytes))

    def set_utilization(self, percent: int) -> None:
        with self._cond:
            self.utilization_percent = max(0, min(100, percent))

    def raise_xid(self, xid: int) -> None:
        """An Xid critical error; Xid 79 also makes the device answer GPU_IS_LOST."""
        with self._cond:
            self._events.append(_Event(EVENT_TYPE_XID_CRITICAL, xid))
            self._cond.notify_all()

    def add_ecc_errors(self, uncorrectable: int) -> None:
        """Uncorrectable (double-bit) ECC errors, with the matching NVML event."""
        with self._cond:
            self.ecc_uncorrected += uncorrectable
            self._events.append(_Event(EVENT_TYPE_DOUBLE_BIT_ECC, 0))
            self._cond.notify_all()

    # --- the pynvml subset ------------------------------------------------

    def _check(self) -> None:
        if self.lost:
            raise SimulatedNvmlError(NVML_ERROR_GPU_IS_LOST)

    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        return None

    def nvmlSystemGetDriverVersion(self) -> str:
        return "simulated"

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if index != 0:
            raise SimulatedNvmlError(NVML_ERROR_INVALID_ARGUMENT)
        return self

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        if uuid != self.uuid:
            raise SimulatedNvmlError(NVML_ERROR_NOT_FOUND)
        return self

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self.uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return SIMULATED_GPU_NAME

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        with self._cond:
            self._check()
            used = self.memory_used_bytes
            return SimpleNamespace(
                total=self.memory_total_bytes, used=used, free=self.memory_total_bytes - used
            )

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        with self._cond:
            self._check()
            return SimpleNamespace(gpu=self.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        with self._cond:
            self._check()
            return 35 + self.utilization_percent * 35 // 100

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        with self._cond:
            self._check()
            return 70_000 + self.utilization_percent * 6_300  # milliwatts, 70-700 W

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int:
        with self._cond:
            self._check()
            if error_type == NVML_MEMORY_ERROR_TYPE_CORRECTED:
                return self.ecc_corrected
            return self.ecc_uncorrected

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        with self._cond:
            self._check()
            return (0, 0, 0, 0)

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return EVENT_TYPE_XID_CRITICAL | EVENT_TYPE_DOUBLE_BIT_ECC

    def nvmlEventSetCreate(self) -> Any:
        return self

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None:
        self._registered = event_types

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        with self._cond:
            if not self._events:
                self._cond.wait(timeout_ms / 1000.0)
            if not self._events:
                raise SimulatedNvmlError(NVML_ERROR_TIMEOUT)
            event = self._events.popleft()
            if event.xid == XID_FALLEN_OFF_BUS:
                self.lost = True
            return SimpleNamespace(device=self, eventType=event.event_type, eventData=event.xid)

    def nvmlEventSetFree(self, event_set: Any) -> None:
        return None


def _uuid_from(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
