"""The NVML adapter against the simulated NVML (the GPU is the one thing simulated)."""

from collections.abc import Callable

import pynvml
import pytest
from kubeinfer.worker.nvml import (
    DeviceSelector,
    Gpu,
    GpuError,
    GpuLostError,
    NoGpuError,
    select_device,
)
from kubeinfer.worker.simnvml import GIB, SimulatedDevice, SimulatedNvml

UUID = "GPU-11111111-2222-3333-4444-555555555555"


class TestSelectDevice:
    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, DeviceSelector()),
            ({"NVIDIA_VISIBLE_DEVICES": UUID}, DeviceSelector(uuid=UUID)),
            ({"NVIDIA_VISIBLE_DEVICES": "MIG-aaaa"}, DeviceSelector(uuid="MIG-aaaa")),
            ({"NVIDIA_VISIBLE_DEVICES": "all"}, DeviceSelector()),
            (
                {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "2"},
                DeviceSelector(index=2),
            ),
            ({"CUDA_VISIBLE_DEVICES": UUID}, DeviceSelector(uuid=UUID)),
            # The device plugin's UUID wins over a CUDA index.
            (
                {"NVIDIA_VISIBLE_DEVICES": UUID, "CUDA_VISIBLE_DEVICES": "0"},
                DeviceSelector(uuid=UUID),
            ),
        ],
    )
    def test_picks(self, env: dict[str, str], expected: DeviceSelector) -> None:
        assert select_device(env) == expected

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"NVIDIA_VISIBLE_DEVICES": "none"}, "no GPU: NVIDIA_VISIBLE_DEVICES=none"),
            ({"NVIDIA_VISIBLE_DEVICES": "void"}, "no GPU"),
            ({"NVIDIA_VISIBLE_DEVICES": f"{UUID},GPU-2"}, "exactly one GPU"),
            ({"CUDA_VISIBLE_DEVICES": "-1"}, "no GPU: CUDA_VISIBLE_DEVICES=-1"),
        ],
    )
    def test_refuses(self, env: dict[str, str], message: str) -> None:
        with pytest.raises(NoGpuError, match=message):
            select_device(env)


class TestOpen:
    def test_by_uuid(self, nvml: SimulatedNvml) -> None:
        other = SimulatedDevice(uuid="GPU-other", name="NVIDIA A100")
        nvml.devices.insert(0, other)
        gpu = Gpu.open(nvml, DeviceSelector(uuid=UUID))
        assert (gpu.uuid, gpu.name, gpu.driver_version) == (
            UUID,
            "NVIDIA H100 80GB HBM3",
            "575.57.08",
        )

    def test_by_index(self, nvml: SimulatedNvml) -> None:
        assert Gpu.open(nvml, DeviceSelector(index=0)).uuid == UUID

    @pytest.mark.parametrize(
        ("make", "selector", "message"),
        [
            (lambda: SimulatedNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
             DeviceSelector(), "no GPU: NVML is not available"),
            (lambda: SimulatedNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED),
             DeviceSelector(), "no GPU: NVML is not available"),
            (lambda: SimulatedNvml(), DeviceSelector(), "no GPU: NVML found no devices"),
            (lambda: SimulatedNvml(SimulatedDevice()), DeviceSelector(index=3),
             "device index 3 but NVML sees 1"),
            (lambda: SimulatedNvml(SimulatedDevice()), DeviceSelector(uuid="GPU-gone"),
             "no GPU: cannot open device GPU-gone"),
        ],
    )  # fmt: skip
    def test_no_gpu(
        self, make: Callable[[], SimulatedNvml], selector: DeviceSelector, message: str
    ) -> None:
        with pytest.raises(NoGpuError, match=message):
            Gpu.open(make(), selector)


class TestSnapshot:
    def test_reads_everything(self, nvml: SimulatedNvml, device: SimulatedDevice) -> None:
        device.utilization_percent, device.ecc_uncorrected = 87, 2
        device.remapped_rows = (0, 0, 1, 0)
        snap = Gpu.open(nvml, DeviceSelector()).snapshot(now=5.0)
        assert snap.memory_total_bytes == 80 * GIB
        assert snap.memory_free_bytes == 79 * GIB
        assert snap.utilization_percent == 87
        assert snap.temperature_celsius == 40
        assert snap.power_watts == 120.0
        assert (snap.ecc_corrected, snap.ecc_uncorrected) == (0, 2)
        assert (snap.remapped_rows_pending, snap.remapped_rows_failed) == (True, False)
        assert snap.to_json()["memoryTotalBytes"] == 80 * GIB

    def test_unsupported_readings_are_none(
        self, nvml: SimulatedNvml, device: SimulatedDevice
    ) -> None:
        # MIG slices and consumer cards: no utilisation, no ECC, no power.
        for function in (
            "nvmlDeviceGetUtilizationRates",
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetRemappedRows",
        ):
            device.errors[function] = pynvml.NVML_ERROR_NOT_SUPPORTED
        snap = Gpu.open(nvml, DeviceSelector()).snapshot(now=0.0)
        assert snap.utilization_percent is None
        assert snap.ecc_uncorrected is None
        assert snap.power_watts is None
        assert snap.remapped_rows_failed is None

    @pytest.mark.parametrize(
        "function", ["nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates"]
    )
    def test_lost_gpu(self, nvml: SimulatedNvml, device: SimulatedDevice, function: str) -> None:
        gpu = Gpu.open(nvml, DeviceSelector())
        device.errors[function] = pynvml.NVML_ERROR_GPU_IS_LOST
        with pytest.raises(GpuLostError, match="GPU lost: NVML reports GPU is lost"):
            gpu.snapshot(now=0.0)

    def test_other_errors_are_not_lost(self, nvml: SimulatedNvml, device: SimulatedDevice) -> None:
        gpu = Gpu.open(nvml, DeviceSelector())
        device.errors["nvmlDeviceGetMemoryInfo"] = pynvml.NVML_ERROR_UNKNOWN
        with pytest.raises(GpuError) as raised:
            gpu.snapshot(now=0.0)
        assert not isinstance(raised.value, GpuLostError)


class TestEvents:
    def test_registers_xid_and_ecc(self, nvml: SimulatedNvml) -> None:
        gpu = Gpu.open(nvml, DeviceSelector())
        mask = gpu.register_events()
        assert (
            mask
            == nvml.registered
            == (pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError)
        )

    def test_unsupported_means_polling_only(
        self, nvml: SimulatedNvml, device: SimulatedDevice
    ) -> None:
        device.event_types = 0
        assert Gpu.open(nvml, DeviceSelector()).register_events() == 0

    def test_wait_returns_xid_then_times_out(self, nvml: SimulatedNvml) -> None:
        gpu = Gpu.open(nvml, DeviceSelector())
        gpu.register_events()
        nvml.raise_xid(79)
        nvml.add_ecc_errors(1)
        first = gpu.wait_event(0.01, now=1.0)
        second = gpu.wait_event(0.01, now=2.0)
        assert first is not None
        assert (first.xid, first.time) == (79, 1.0)
        assert second is not None
        assert second.xid == 0
        assert gpu.wait_event(0.01, now=3.0) is None

    def test_wait_on_a_lost_gpu(self, nvml: SimulatedNvml, device: SimulatedDevice) -> None:
        gpu = Gpu.open(nvml, DeviceSelector())
        gpu.register_events()
        device.errors["nvmlEventSetWait_v2"] = pynvml.NVML_ERROR_GPU_IS_LOST
        with pytest.raises(GpuLostError):
            gpu.wait_event(0.01, now=0.0)

    def test_close_shuts_nvml_down(self, nvml: SimulatedNvml) -> None:
        gpu = Gpu.open(nvml, DeviceSelector())
        gpu.register_events()
        gpu.close()
        assert nvml.shutdown_called


class TestSimulatedWorkerGpu:
    """What the simulated engine's worker relies on (SimulatedNvml.one_gpu)."""

    def test_xid_79_is_seen_then_the_gpu_is_lost(self) -> None:
        nvml = SimulatedNvml.one_gpu()
        gpu = Gpu.open(nvml, DeviceSelector())
        gpu.register_events()
        assert gpu.snapshot(now=0.0).memory_total_bytes == 80 * GIB
        nvml.raise_xid(79)
        event = gpu.wait_event(0.01, now=1.0)
        assert event is not None
        assert event.xid == 79
        with pytest.raises(GpuLostError, match="GPU lost: NVML reports GPU is lost"):
            gpu.snapshot(now=2.0)

    def test_an_application_xid_leaves_the_gpu_readable(self) -> None:
        nvml = SimulatedNvml.one_gpu()
        gpu = Gpu.open(nvml, DeviceSelector())
        gpu.register_events()
        nvml.raise_xid(13)
        event = gpu.wait_event(0.01, now=1.0)
        assert event is not None
        assert event.xid == 13
        assert gpu.snapshot(now=2.0).utilization_percent == 0

    def test_engine_reports_drive_the_readings(self) -> None:
        nvml = SimulatedNvml.one_gpu(memory_total_gib=24)
        gpu = Gpu.open(nvml, DeviceSelector())
        nvml.set_memory_used(100 * GIB)  # clamped to the card
        nvml.set_utilization(150)  # clamped to 100 %
        snap = gpu.snapshot(now=0.0)
        assert (snap.memory_used_bytes, snap.memory_free_bytes) == (24 * GIB, 0)
        assert (snap.utilization_percent, snap.temperature_celsius) == (100, 70)
        assert snap.power_watts == 700.0

    def test_uuid_is_stable_per_seed(self) -> None:
        first = Gpu.open(SimulatedNvml.one_gpu(seed="127.0.0.1:8000"), DeviceSelector())
        again = Gpu.open(SimulatedNvml.one_gpu(seed="127.0.0.1:8000"), DeviceSelector())
        other = Gpu.open(SimulatedNvml.one_gpu(seed="127.0.0.1:8001"), DeviceSelector())
        assert first.uuid == again.uuid != other.uuid
        assert first.uuid.startswith("GPU-")
        assert first.driver_version == "simulated"
