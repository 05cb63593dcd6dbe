# pynvml's function names are camelCase; the adapter keeps them.
# ruff: noqa: N802
"""The one place that talks to NVML: find the pod's GPU, read it, wait for Xids.

Everything else in the worker sees `Gpu`, `GpuSnapshot` and `XidEvent`.
The NVML library is passed in (`pynvml` on a GPU, the simulated NVML of
`kubeinfer.worker.simnvml` for the simulated engine and in unit tests), so
the same code handles a real and a simulated fault.

NVML errors are mapped to two exceptions: `NoGpuError` (nothing to watch:
no driver, no device, wrong UUID) and `GpuLostError` (the device stopped
answering, e.g. after Xid 79 "fallen off the bus").
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from kubeinfer.operator.api.exits import GpuFault

# NVML return codes (nvml.h); pynvml exposes the same numbers as
# NVML_ERROR_*. Repeated here so that this module needs no pynvml import.
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
EVENT_TYPE_SINGLE_BIT_ECC = 0x1
EVENT_TYPE_DOUBLE_BIT_ECC = 0x2
EVENT_TYPE_XID_CRITICAL = 0x8

# Codes after which the device cannot be trusted any more. Other errors
# (NVML_ERROR_UNKNOWN included) may be transient: the watcher counts them.
_LOST_CODES = frozenset({NVML_ERROR_GPU_IS_LOST})
_NO_GPU_CODES = frozenset(
    {NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_NOT_FOUND}
)


class NvmlLibrary(Protocol):
    """The part of pynvml the adapter uses (pynvml's own names)."""

    @property
    def NVMLError(self) -> type[Exception]: ...

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int: ...
    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int: ...
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None: ...
    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any: ...
    def nvmlEventSetFree(self, event_set: Any) -> None: ...


class GpuError(Exception):
    """A problem with the GPU; `str()` is the reason a person reads."""


class NoGpuError(GpuError):
    """There is no usable GPU for this pod (no driver, no device, bad UUID)."""


class GpuLostError(GpuError):
    """The GPU stopped answering NVML (fallen off the bus, driver reset)."""


@dataclass(frozen=True)
class XidEvent:
    """One NVML event: an Xid critical error or an ECC event."""

    xid: int  # 0 for an ECC event without Xid
    event_type: int
    time: float


@dataclass(frozen=True)
class GpuSnapshot:
    """One reading of the device. None where the device does not support it."""

    uuid: str
    name: str
    driver_version: str
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    utilization_percent: int | None
    temperature_celsius: int | None
    power_watts: float | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    remapped_rows_pending: bool | None
    remapped_rows_failed: bool | None
    time: float

    def to_json(self) -> dict[str, Any]:
        """camelCase, like every other kubeinfer JSON."""
        raw = asdict(self)
        return {_camel(key): value for key, value in raw.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True)
class DeviceSelector:
    """How to find the pod's GPU: a UUID (GPU-... or MIG-...) or an index."""

    uuid: str | None = None
    index: int = 0


def _is_uuid(value: str) -> bool:
    return value.startswith(("GPU-", "MIG-"))


def select_device(env: Mapping[str, str]) -> DeviceSelector:
    """Which device NVML should watch, from the visible-devices variables.

    The NVIDIA device plugin sets NVIDIA_VISIBLE_DEVICES to the UUID of the
    GPU it gave the pod; NVML inside the container may still see other
    devices on some runtimes, so a UUID is the only reliable handle.
    CUDA_VISIBLE_DEVICES (UUID or index) is the fallback. Raises NoGpuError
    when the pod was given no GPU or more than one.
    """
    nvidia = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if nvidia in ("none", "void"):
        raise NoGpuError(f"no GPU: NVIDIA_VISIBLE_DEVICES={nvidia}")
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        value = env.get(name, "").strip()
        if not value or value == "all":
            continue
        items = [item.strip() for item in value.split(",") if item.strip()]
        if len(items) > 1:
            raise NoGpuError(f"a worker uses exactly one GPU, but {name}={value}")
        if name == "CUDA_VISIBLE_DEVICES" and items and items[0] in ("-1", "none"):
            raise NoGpuError(f"no GPU: {name}={value}")
        if items and _is_uuid(items[0]):
            return DeviceSelector(uuid=items[0])
        if items and items[0].isdigit() and name == "CUDA_VISIBLE_DEVICES":
            return DeviceSelector(index=int(items[0]))
    return DeviceSelector()


class Gpu:
    """One GPU, read through NVML. Thread-safe as NVML is; not async."""

    def __init__(self, lib: NvmlLibrary, handle: Any, uuid: str, name: str, driver: str):
        self._lib = lib
        self._handle = handle
        self.uuid = uuid
        self.name = name
        self.driver_version = driver
        self._events: Any = None
        self.event_types = 0

    @classmethod
    def open(cls, lib: NvmlLibrary, selector: DeviceSelector) -> "Gpu":
        """Initialise NVML and find the device. Raises NoGpuError or GpuLostError."""
        try:
            lib.nvmlInit()
        except lib.NVMLError as error:
            raise NoGpuError(f"no GPU: NVML is not available ({error})") from None
        try:
            driver = _text(lib.nvmlSystemGetDriverVersion())
            if selector.uuid is not None:
                handle = lib.nvmlDeviceGetHandleByUUID(selector.uuid)
            else:
                count = lib.nvmlDeviceGetCount()
                if count == 0:
                    raise NoGpuError("no GPU: NVML found no devices")
                if selector.index >= count:
                    raise NoGpuError(f"no GPU: device index {selector.index} but NVML sees {count}")
                handle = lib.nvmlDeviceGetHandleByIndex(selector.index)
            uuid = _text(lib.nvmlDeviceGetUUID(handle))
            name = _text(lib.nvmlDeviceGetName(handle))
        except lib.NVMLError as error:
            what = f"no GPU: cannot open device {selector.uuid or selector.index}"
            raise _mapped(error, what=what) from None
        return cls(lib, handle, uuid, name, driver)

    def _optional(self, call: Any, *args: Any) -> Any:
        """A reading some devices lack (MIG, consumer cards): None instead of an error."""
        try:
            return call(self._handle, *args)
        except self._lib.NVMLError as error:
            code = getattr(error, "value", None)
            if code in (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION):
                return None
            raise _mapped(error, what="NVML read failed") from None

    def snapshot(self, now: float) -> GpuSnapshot:
        """Read the device. Raises GpuLostError when it stopped answering."""
        lib = self._lib
        try:
            memory = lib.nvmlDeviceGetMemoryInfo(self._handle)
        except lib.NVMLError as error:
            raise _mapped(error, what="NVML memory read failed") from None
        rates = self._optional(lib.nvmlDeviceGetUtilizationRates)
        power_mw = self._optional(lib.nvmlDeviceGetPowerUsage)
        remapped = self._optional(lib.nvmlDeviceGetRemappedRows)
        return GpuSnapshot(
            uuid=self.uuid,
            name=self.name,
            driver_version=self.driver_version,
            memory_total_bytes=int(memory.total),
            memory_used_bytes=int(memory.used),
            memory_free_bytes=int(memory.free),
            utilization_percent=None if rates is None else int(rates.gpu),
            temperature_celsius=self._optional(lib.nvmlDeviceGetTemperature, NVML_TEMPERATURE_GPU),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            ecc_corrected=self._optional(
                lib.nvmlDeviceGetTotalEccErrors, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC
            ),
            ecc_uncorrected=self._optional(
                lib.nvmlDeviceGetTotalEccErrors,
                NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                NVML_VOLATILE_ECC,
            ),
            remapped_rows_pending=None if remapped is None else bool(remapped[2]),
            remapped_rows_failed=None if remapped is None else bool(remapped[3]),
            time=now,
        )

    def register_events(self) -> int:
        """Subscribe to Xid critical errors and double-bit ECC errors.

        Returns the registered event mask; 0 when the device supports none
        (then faults are seen by polling only).
        """
        lib = self._lib
        wanted = EVENT_TYPE_XID_CRITICAL | EVENT_TYPE_DOUBLE_BIT_ECC
        supported = self._optional(lib.nvmlDeviceGetSupportedEventTypes)
        mask = wanted & (supported if supported is not None else 0)
        if not mask:
            return 0
        try:
            self._events = lib.nvmlEventSetCreate()
            lib.nvmlDeviceRegisterEvents(self._handle, mask, self._events)
        except lib.NVMLError as error:
            if getattr(error, "value", None) == NVML_ERROR_NOT_SUPPORTED:
                return 0
            raise _mapped(error, what="NVML event registration failed") from None
        self.event_types = mask
        return mask

    def wait_event(self, timeout_s: float, now: float) -> XidEvent | None:
        """Block up to `timeout_s` for an event; None on timeout.

        Raises GpuLostError when the device stopped answering.
        """
        if self._events is None:
            raise RuntimeError("register_events() first")
        lib = self._lib
        try:
            data = lib.nvmlEventSetWait_v2(self._events, max(int(timeout_s * 1000), 1))
        except lib.NVMLError as error:
            if getattr(error, "value", None) == NVML_ERROR_TIMEOUT:
                return None
            raise _mapped(error, what="NVML event wait failed") from None
        event_type = int(data.eventType)
        xid = int(data.eventData) if event_type & EVENT_TYPE_XID_CRITICAL else 0
        return XidEvent(xid=xid, event_type=event_type, time=now)

    def close(self) -> None:
        """Release the event set and NVML; errors here change nothing."""
        lib = self._lib
        try:
            if self._events is not None:
                lib.nvmlEventSetFree(self._events)
                self._events = None
            lib.nvmlShutdown()
        except lib.NVMLError:
            pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _mapped(error: Exception, *, what: str) -> GpuError:
    code = getattr(error, "value", None)
    if code in _LOST_CODES:
        return GpuLostError(GpuFault.LOST.message(f"NVML reports {error}"))
    if code in _NO_GPU_CODES:
        return NoGpuError(f"{what} ({error})")
    return GpuError(f"{what} ({error})")
