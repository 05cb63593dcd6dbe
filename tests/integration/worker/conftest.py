"""Fixtures for the worker's integration tests: real worker processes (see worker_process.py)."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_process import Worker, start_worker_process


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a worker process; it is killed at the end of the test if still running."""
    workers: list[Worker] = []

    def start(**options: Any) -> Worker:
        worker = start_worker_process(tmp_path / f"worker-{len(workers)}", **options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


@pytest.fixture(scope="session")
def shared_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One ready worker for tests that only send requests."""
    worker = start_worker_process(
        tmp_path_factory.mktemp("shared-worker"), simulator={"ttftMs": 2, "tpotMs": 1, "seed": 42}
    )
    worker.wait_ready()
    yield worker
    worker.kill()
