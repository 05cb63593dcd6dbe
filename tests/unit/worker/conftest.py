"""Fixtures for the worker's unit tests: the GPU, the one thing simulated
(kubeinfer.worker.simnvml, the same NVML the simulated engine's workers use)."""

import pytest
from kubeinfer.worker.simnvml import GIB, SimulatedDevice, SimulatedNvml


@pytest.fixture
def device() -> SimulatedDevice:
    """A card with fixed readings (the simulation derives temperature and
    power from the utilisation unless they are set)."""
    return SimulatedDevice(
        uuid="GPU-11111111-2222-3333-4444-555555555555",
        name="NVIDIA H100 80GB HBM3",
        memory_used_bytes=1 * GIB,
        temperature_celsius=40,
        power_milliwatts=120_000,
    )


@pytest.fixture
def nvml(device: SimulatedDevice) -> SimulatedNvml:
    # Old pynvml versions return the driver version as bytes.
    return SimulatedNvml(device, driver_version=b"575.57.08")
