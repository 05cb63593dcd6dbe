"""Fixtures for the worker's unit tests: a fake GPU (see fake_nvml.py)."""

import pytest
from fake_nvml import FakeDevice, FakeNvml


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def nvml(device: FakeDevice) -> FakeNvml:
    return FakeNvml(device)
