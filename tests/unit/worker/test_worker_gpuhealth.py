"""GPU health rules: which readings stop a worker, and with which reason."""

import dataclasses

import pynvml
import pytest
from kubeinfer.operator.api import ModelSpec
from kubeinfer.worker.gpuhealth import (
    ReadFailures,
    StuckDetector,
    ecc_fault,
    precheck_fault,
    service_fault,
    xid_fault,
)
from kubeinfer.worker.nvml import DeviceSelector, Gpu, GpuSnapshot, XidEvent
from kubeinfer.worker.simnvml import GIB, SimulatedDevice, SimulatedNvml

XID = pynvml.nvmlEventTypeXidCriticalError
DBE = pynvml.nvmlEventTypeDoubleBitEccError


def snapshot_of(device: SimulatedDevice) -> GpuSnapshot:
    return Gpu.open(SimulatedNvml(device), DeviceSelector()).snapshot(now=0.0)


def model(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "source": "org/m", **fields})


@pytest.mark.parametrize(
    ("xid", "event_type", "reason"),
    [
        (79, XID, "GPU lost: Xid 79 (GPU has fallen off the bus)"),
        (48, XID, "GPU fault: Xid 48 (double-bit ECC error)"),
        (95, XID, "GPU fault: Xid 95 (uncontained ECC error)"),
        (119, XID, "GPU fault: Xid 119 (GSP RPC timeout)"),
        (150, XID, "GPU fault: Xid 150 (critical error)"),  # unknown: treated as fatal
        (0, DBE, "GPU fault: uncorrectable (double-bit) ECC error"),
        # Application errors: vLLM's own crash reports those; the GPU is fine.
        (13, XID, None),
        (31, XID, None),
        (43, XID, None),
    ],
)
def test_xid_fault(xid: int, event_type: int, reason: str | None) -> None:
    assert xid_fault(XidEvent(xid=xid, event_type=event_type, time=0.0)) == reason


class TestPrecheck:
    def test_fits(self) -> None:
        assert (
            precheck_fault(
                snapshot_of(SimulatedDevice(memory_used_bytes=1 * GIB)), model(vramGiB=40)
            )
            is None
        )

    def test_another_process_holds_memory(self) -> None:
        # vLLM asks for 0.9 x 80 = 72 GiB; only 50 GiB are free.
        reason = precheck_fault(snapshot_of(SimulatedDevice(memory_used_bytes=30 * GIB)), model())
        assert reason == (
            "not enough GPU memory: 50.0 GiB free of 80.0 GiB, vLLM will ask for 72.0 GiB "
            "(gpuMemoryUtilization 0.9); another process uses the GPU"
        )

    def test_lower_utilisation_fits_the_same_gpu(self) -> None:
        spec = model(engineArgs={"gpuMemoryUtilization": 0.5})
        assert (
            precheck_fault(snapshot_of(SimulatedDevice(memory_used_bytes=30 * GIB)), spec) is None
        )

    @pytest.mark.parametrize(
        ("fields", "needs"),
        [
            ({"vramGiB": 100}, "100.0"),
            ({"parametersBillions": 70}, "130.4"),  # 70e9 x 2 bytes
        ],
    )
    def test_model_too_big(self, fields: dict[str, object], needs: str) -> None:
        reason = precheck_fault(snapshot_of(SimulatedDevice(memory_used_bytes=0)), model(**fields))
        assert reason is not None
        assert reason.startswith(
            f"model does not fit: it needs about {needs} GiB, vLLM may use 72.0"
        )

    def test_failed_row_remapping_is_a_gpu_fault(self) -> None:
        snapshot = snapshot_of(SimulatedDevice(remapped_rows=(0, 4, 0, 1)))
        reason = service_fault(snapshot)
        assert reason is not None
        assert reason.startswith("GPU needs service: row remapping failed")
        assert service_fault(snapshot_of(SimulatedDevice(remapped_rows=(0, 4, 1, 0)))) is None


def test_ecc_fault_counts_new_errors_only() -> None:
    start = snapshot_of(SimulatedDevice(ecc_uncorrected=3))
    assert ecc_fault(start, start) is None
    assert ecc_fault(dataclasses.replace(start, ecc_uncorrected=4), start) == (
        "GPU fault: 1 uncorrectable ECC error since start"
    )
    assert ecc_fault(dataclasses.replace(start, ecc_uncorrected=None), start) is None


class TestStuck:
    def test_zero_utilisation_with_requests_running(self) -> None:
        stuck = StuckDetector(limit_seconds=60)
        assert stuck.observe(0.0, 0, running=3) is None  # t=0: starts counting
        assert stuck.observe(30.0, 0, running=3) is None
        assert stuck.observe(61.0, 0, running=3) == (
            "GPU stuck: 0% utilisation for 61 s with 3 requests running"
        )

    @pytest.mark.parametrize(
        ("utilization", "running"),
        [(5, 3), (0, 0), (None, 3)],  # busy; idle; no utilisation reading (MIG)
    )
    def test_resets(self, utilization: int | None, running: int) -> None:
        stuck = StuckDetector(limit_seconds=60)
        stuck.observe(0.0, 0, running=3)
        assert stuck.observe(30.0, utilization, running) is None
        assert stuck.observe(70.0, 0, running=3) is None  # counting restarted at 70

    def test_disabled(self) -> None:
        stuck = StuckDetector(limit_seconds=0)
        assert stuck.observe(0.0, 0, 1) is None
        assert stuck.observe(1000.0, 0, 1) is None


def test_read_failures_in_a_row() -> None:
    failures = ReadFailures(limit=3)
    assert failures.observe("timeout") is None
    assert failures.observe("timeout") is None
    assert failures.observe(None) is None  # a good read resets the count
    assert failures.observe("timeout") is None
    assert failures.observe("timeout") is None
    assert failures.observe("unknown error") == "GPU unreadable: unknown error"
