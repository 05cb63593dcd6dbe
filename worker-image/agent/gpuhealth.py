"""What a GPU reading means: the rules, as pure functions over snapshots.

Each rule returns None (healthy) or the one-line reason that ends up in the
termination message, so the operator and `kubectl describe pod` show it.
"""

from dataclasses import dataclass

from kubeinfer.operator.api import Dtype, ModelSpec
from kubeinfer.operator.api.exits import GpuFault
from kubeinfer.worker.nvml import GpuSnapshot, XidEvent

GIB = 1024**3

# Xids that mean "the application did something wrong", not "the GPU is
# broken": the NVIDIA device plugin ignores the same list. vLLM itself
# crashes on them, and that crash is reported as the engine's failure.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})

XID_DESCRIPTIONS = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping event",
    64: "ECC page retirement or row remapping failure",
    68: "video decoder exception",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    109: "context switch timeout",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}
XID_FALLEN_OFF_BUS = 79


def describe_xid(xid: int) -> str:
    return XID_DESCRIPTIONS.get(xid, "critical error")


def xid_fault(event: XidEvent) -> str | None:
    """The reason to stop for an NVML event, or None when it is not the GPU's fault."""
    if event.xid == 0:
        return GpuFault.FAULT.message("uncorrectable (double-bit) ECC error")
    if event.xid in APPLICATION_XIDS:
        return None
    kind = GpuFault.LOST if event.xid == XID_FALLEN_OFF_BUS else GpuFault.FAULT
    return kind.message(f"Xid {event.xid} ({describe_xid(event.xid)})")


_BYTES_PER_PARAMETER = {
    Dtype.AUTO: 2.0,
    Dtype.FLOAT16: 2.0,
    Dtype.BFLOAT16: 2.0,
    Dtype.FLOAT32: 4.0,
}


def model_memory_bytes(model: ModelSpec) -> int | None:
    """What the model needs on the GPU: vramGiB, else weights from the parameter count."""
    if model.vram_gi_b is not None:
        return int(model.vram_gi_b * GIB)
    if model.parameters_billions is not None:
        per_parameter = _BYTES_PER_PARAMETER[model.engine_args.dtype]
        return int(model.parameters_billions * 1e9 * per_parameter)
    return None


def service_fault(snapshot: GpuSnapshot) -> str | None:
    """The GPU must be reset before anything runs on it: a GPU fault, not a
    start-up problem, so the pod moves to another GPU at once."""
    if snapshot.remapped_rows_failed:
        return GpuFault.NEEDS_SERVICE.message(
            f"row remapping failed on {snapshot.name} {snapshot.uuid}"
        )
    return None


def precheck_fault(snapshot: GpuSnapshot, model: ModelSpec) -> str | None:
    """Can vLLM start on this GPU? Checked before the engine is launched.

    vLLM reserves gpuMemoryUtilization x total memory at start and fails
    after loading the weights when less than that is free, which for a big
    model is minutes in. Saying it up front is cheaper and clearer.
    """
    utilization = model.engine_args.gpu_memory_utilization
    total = snapshot.memory_total_bytes
    budget = utilization * total
    if snapshot.memory_free_bytes < budget:
        return (
            f"not enough GPU memory: {snapshot.memory_free_bytes / GIB:.1f} GiB free of "
            f"{total / GIB:.1f} GiB, vLLM will ask for {budget / GIB:.1f} GiB "
            f"(gpuMemoryUtilization {utilization:g}); another process uses the GPU"
        )
    need = model_memory_bytes(model)
    if need is not None and need > budget:
        return (
            f"model does not fit: it needs about {need / GIB:.1f} GiB, vLLM may use "
            f"{budget / GIB:.1f} GiB of this {snapshot.name} "
            f"({total / GIB:.1f} GiB x gpuMemoryUtilization {utilization:g})"
        )
    return None


def ecc_fault(snapshot: GpuSnapshot, baseline: GpuSnapshot) -> str | None:
    """New uncorrectable ECC errors since the worker started."""
    if snapshot.ecc_uncorrected is None or baseline.ecc_uncorrected is None:
        return None
    new = snapshot.ecc_uncorrected - baseline.ecc_uncorrected
    if new > 0:
        plural = "s" if new > 1 else ""
        return GpuFault.FAULT.message(f"{new} uncorrectable ECC error{plural} since start")
    return None


@dataclass
class StuckDetector:
    """0% utilisation while requests are running, for `limit_seconds` in a row.

    A hung kernel or a wedged driver leaves vLLM "running" requests forever
    while the GPU does nothing; /health keeps answering, so only this shows it.
    """

    limit_seconds: float
    since: float | None = None

    def observe(self, now: float, utilization: int | None, running: int) -> str | None:
        if utilization is None or utilization > 0 or running == 0 or self.limit_seconds <= 0:
            self.since = None
            return None
        if self.since is None:
            self.since = now
        stuck_for = now - self.since
        if stuck_for >= self.limit_seconds:
            plural = "s" if running != 1 else ""
            return GpuFault.STUCK.message(
                f"0% utilisation for {stuck_for:.0f} s with {running} request{plural} running"
            )
        return None


@dataclass
class ReadFailures:
    """NVML reads that fail without saying the GPU is lost: fatal when they persist."""

    limit: int = 3
    count: int = 0

    def observe(self, error: str | None) -> str | None:
        if error is None:
            self.count = 0
            return None
        self.count += 1
        if self.count >= self.limit:
            return GpuFault.UNREADABLE.message(error)
        return None
