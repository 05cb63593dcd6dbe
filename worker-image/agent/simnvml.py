# pynvml's function names are camelCase; the simulation keeps them.
# ruff: noqa: N802
"""The one simulated NVML: GPUs that answer pynvml's functions.

Product code, not test code: `engine: simulated` is part of the API
(`spec.worker.engine`), and a worker started that way (the demo, the local
cluster, a user trying kubeinfer without GPUs) watches this device through
the same adapter (`kubeinfer.worker.nvml`) as a real GPU, so a simulated
fault travels the path of a real one: the adapter reads an Xid event (or
GPU_IS_LOST) and the agent's watcher decides what it means. So it lives in
the worker package and ships in the worker image. The worker's unit tests
use it as their stand-in for the GPU too (the one thing they fake); there
is no second fake.

Its surface is nvidia-ml-py's: the functions the adapter calls, under
pynvml's names, raising pynvml's own `NVMLError` (whose subclasses
pynvml picks from the return code), so the adapter's error mapping is
exercised against the real exception hierarchy. Importing pynvml loads
no driver; only `pynvml.nvmlInit()` would, and this module never calls it.

Who drives the device: the simulated engine (a child process, through the
agent) sets the memory taken once the model is loaded, the busy fraction of
the last second, an Xid when `gpuFaultAfterRequests` is reached; the admin
endpoint injects Xids and ECC errors; unit tests set any reading, make any
function fail with an NVML return code (`errors`), or NVML itself fail to
start (`init_error`). Updates come from the event loop thread; NVML reads
and event waits from the watcher thread.
"""

import hashlib
import threading
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1024**3
SIMULATED_GPU_NAME = "NVIDIA H100 80GB HBM3 (simulated)"
# Xid 79: "GPU has fallen off the bus"; afterwards NVML answers GPU_IS_LOST.
XID_FALLEN_OFF_BUS = 79


def simulated_uuid(seed: str) -> str:
    """A stable GPU UUID (NVML's format) derived from `seed`."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


@dataclass
class SimulatedDevice:
    """One GPU's state: what NVML reads from it."""

    uuid: str = field(default_factory=lambda: simulated_uuid("0"))
    name: str = SIMULATED_GPU_NAME
    memory_total_bytes: int = 80 * GIB
    memory_used_bytes: int = 0
    utilization_percent: int = 0
    # None: follows the utilisation (35-70 °C, 70-700 W), like a real card.
    temperature_celsius: int | None = None
    power_milliwatts: int | None = None
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    # nvmlDeviceGetRemappedRows: (correctable, uncorrectable, pending, failed).
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    event_types: int = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError
    # After Xid 79 every read answers NVML_ERROR_GPU_IS_LOST.
    lost: bool = False
    # pynvml function name -> the NVML return code it fails with (e.g.
    # NOT_SUPPORTED for a reading a MIG slice lacks).
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class _Event:
    device: SimulatedDevice
    event_type: int
    xid: int


class SimulatedNvml:
    """pynvml's functions over simulated devices, plus the knobs that drive them."""

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        *devices: SimulatedDevice,
        init_error: int | None = None,
        driver_version: str | bytes = "simulated",
    ):
        self.devices = list(devices)
        self.init_error = init_error
        # Old pynvml versions return bytes here; the adapter takes both.
        self.driver_version = driver_version
        self.registered = 0  # the event mask last registered
        self.shutdown_called = False
        self._cond = threading.Condition()
        self._events: deque[_Event] = deque()

    @classmethod
    def one_gpu(cls, *, memory_total_gib: float = 80.0, seed: str = "0") -> "SimulatedNvml":
        """What a simulated worker sees: one H100-like GPU, UUID derived from `seed`."""
        return cls(
            SimulatedDevice(
                uuid=simulated_uuid(seed), memory_total_bytes=int(memory_total_gib * GIB)
            )
        )

    # --- driven by the simulated engine, the admin endpoint and tests ------

    @property
    def gpu(self) -> SimulatedDevice:
        """The first device: the one a simulated worker watches."""
        return self.devices[0]

    def set_memory_used(self, used_bytes: int) -> None:
        with self._cond:
            self.gpu.memory_used_bytes = max(0, min(used_bytes, self.gpu.memory_total_bytes))

    def set_utilization(self, percent: int) -> None:
        with self._cond:
            self.gpu.utilization_percent = max(0, min(100, percent))

    def raise_xid(self, xid: int) -> None:
        """An Xid critical error; once read, Xid 79 makes the device answer GPU_IS_LOST."""
        with self._cond:
            self._events.append(_Event(self.gpu, pynvml.nvmlEventTypeXidCriticalError, xid))
            self._cond.notify_all()

    def add_ecc_errors(self, uncorrectable: int) -> None:
        """Uncorrectable (double-bit) ECC errors, with the matching NVML event."""
        with self._cond:
            self.gpu.ecc_uncorrected += uncorrectable
            self._events.append(_Event(self.gpu, pynvml.nvmlEventTypeDoubleBitEccError, 0))
            self._cond.notify_all()

    # --- the pynvml subset ------------------------------------------------

    @staticmethod
    def _check(device: SimulatedDevice, function: str, *, reading: bool = True) -> None:
        code = device.errors.get(function)
        if code is not None:
            raise pynvml.NVMLError(code)
        if reading and device.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimulatedDevice:
        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> SimulatedDevice:
        for device in self.devices:
            if device.uuid == uuid:
                return device
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: SimulatedDevice) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: SimulatedDevice) -> str:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: SimulatedDevice) -> Any:
        with self._cond:
            self._check(handle, "nvmlDeviceGetMemoryInfo")
            total, used = handle.memory_total_bytes, handle.memory_used_bytes
            return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: SimulatedDevice) -> Any:
        with self._cond:
            self._check(handle, "nvmlDeviceGetUtilizationRates")
            return SimpleNamespace(gpu=handle.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, handle: SimulatedDevice, sensor: int) -> int:
        with self._cond:
            self._check(handle, "nvmlDeviceGetTemperature")
            if handle.temperature_celsius is not None:
                return handle.temperature_celsius
            return 35 + handle.utilization_percent * 35 // 100

    def nvmlDeviceGetPowerUsage(self, handle: SimulatedDevice) -> int:
        with self._cond:
            self._check(handle, "nvmlDeviceGetPowerUsage")
            if handle.power_milliwatts is not None:
                return handle.power_milliwatts
            return 70_000 + handle.utilization_percent * 6_300

    def nvmlDeviceGetTotalEccErrors(
        self, handle: SimulatedDevice, error_type: int, counter: int
    ) -> int:
        with self._cond:
            self._check(handle, "nvmlDeviceGetTotalEccErrors")
            if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
                return handle.ecc_corrected
            return handle.ecc_uncorrected

    def nvmlDeviceGetRemappedRows(self, handle: SimulatedDevice) -> tuple[int, int, int, int]:
        with self._cond:
            self._check(handle, "nvmlDeviceGetRemappedRows")
            return handle.remapped_rows

    def nvmlDeviceGetSupportedEventTypes(self, handle: SimulatedDevice) -> int:
        self._check(handle, "nvmlDeviceGetSupportedEventTypes", reading=False)
        return handle.event_types

    def nvmlEventSetCreate(self) -> Any:
        return self._events

    def nvmlDeviceRegisterEvents(
        self, handle: SimulatedDevice, event_types: int, event_set: Any
    ) -> None:
        self._check(handle, "nvmlDeviceRegisterEvents", reading=False)
        self.registered = event_types

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        with self._cond:
            if self.devices:
                self._check(self.gpu, "nvmlEventSetWait_v2", reading=False)
            if not self._events:
                self._cond.wait(timeout_ms / 1000.0)
            if not self._events:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
            event = self._events.popleft()
            if event.xid == XID_FALLEN_OFF_BUS:
                event.device.lost = True
            return SimpleNamespace(
                device=event.device, eventType=event.event_type, eventData=event.xid
            )

    def nvmlEventSetFree(self, event_set: Any) -> None:
        return None
