# pynvml's function names are camelCase; the fake keeps them.
# ruff: noqa: N802
"""A fake NVML library: the only stand-in in the worker's tests (the GPU).

It implements the pynvml functions the adapter calls and raises pynvml's
own exception classes, so the adapter's error mapping is tested against
the real NVMLError hierarchy.
"""

from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1024**3


@dataclass
class FakeDevice:
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * GIB
    used: int = 1 * GIB
    utilization: int = 0
    temperature: int = 40
    power_mw: int = 120_000
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    event_types: int = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError
    # pynvml function name -> NVML return code to raise from it
    errors: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    NVMLError = pynvml.NVMLError

    def __init__(self, *devices: FakeDevice, init_error: int | None = None):
        self.devices = list(devices)
        self.init_error = init_error
        self.events: deque[tuple[int, int]] = deque()  # (event type, xid)
        self.registered: int = 0
        self.shutdown_called = False

    def _raise(self, device: FakeDevice, function: str) -> None:
        code = device.errors.get(function)
        if code is not None:
            raise pynvml.NVMLError(code)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"575.57.08"  # old pynvml versions return bytes

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        if index >= len(self.devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeDevice:
        for device in self.devices:
            if device.uuid == uuid:
                return device
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Any:
        self._raise(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(
            total=handle.total, used=handle.used, free=handle.total - handle.used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:
        self._raise(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=handle.utilization, memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        self._raise(handle, "nvmlDeviceGetTemperature")
        return handle.temperature

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        self._raise(handle, "nvmlDeviceGetPowerUsage")
        return handle.power_mw

    def nvmlDeviceGetTotalEccErrors(self, handle: FakeDevice, error_type: int, counter: int) -> int:
        self._raise(handle, "nvmlDeviceGetTotalEccErrors")
        if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return handle.ecc_corrected
        return handle.ecc_uncorrected

    def nvmlDeviceGetRemappedRows(self, handle: FakeDevice) -> tuple[int, int, int, int]:
        self._raise(handle, "nvmlDeviceGetRemappedRows")
        return handle.remapped

    def nvmlDeviceGetSupportedEventTypes(self, handle: FakeDevice) -> int:
        self._raise(handle, "nvmlDeviceGetSupportedEventTypes")
        return handle.event_types

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceRegisterEvents(
        self, handle: FakeDevice, event_types: int, event_set: Any
    ) -> None:
        self._raise(handle, "nvmlDeviceRegisterEvents")
        self.registered = event_types

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        self._raise(self.devices[0], "nvmlEventSetWait_v2")
        if not self.events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        event_type, xid = self.events.popleft()
        return SimpleNamespace(eventType=event_type, eventData=xid, device=self.devices[0])

    def nvmlEventSetFree(self, event_set: Any) -> None:
        return None
