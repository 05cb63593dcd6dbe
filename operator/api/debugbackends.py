"""`GET /debug/backends`: what a router says about its workers and revisions.

Defined once, here: the router writes it (``kubeinfer.router.stats``), the
operator reads it (canary analysis, the autoscaler's signals, the GPU
inventory) and so does `kubectl kubeinfer top`. ``version`` changes when a
reader could misread a field; a reader refuses other versions (and skips
that router) rather than guess.
"""

from typing import Final, Literal

from kubeinfer.operator.api.base import ApiModel
from pydantic import ConfigDict

VERSION: Final = 1
MIB: Final = 1024 * 1024


def worst(a: float | None, b: float | None) -> float | None:
    """The larger of two optional figures: how readers combine a latency
    percentile or an age seen by several routers (or several router
    processes), since one slow router is enough to make a revision slow."""
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


class GpuReport(ApiModel):
    """What the router keeps of its worker agent's ``GET /gpu`` (NVML)."""

    # The agent's report has more fields than the router passes on.
    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})

    uuid: str | None = None
    name: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    utilization_percent: int | None = None
    healthy: bool = True
    fault: str | None = None

    @property
    def memory_mib(self) -> int | None:
        """Total memory in MiB (rounded down), as `kubectl kubeinfer top` and the
        inventory show it."""
        return None if self.memory_total_bytes is None else self.memory_total_bytes // MIB

    @property
    def memory_used_mib(self) -> int | None:
        """Used memory in MiB (rounded down)."""
        return None if self.memory_used_bytes is None else self.memory_used_bytes // MIB


class StatsWindow(ApiModel):
    """Attempts in the last ``seconds`` (the router's sliding window)."""

    seconds: float
    requests: int
    errors: int
    error_rate: float
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    p50_ttft_ms: float | None
    p90_ttft_ms: float | None
    p99_ttft_ms: float | None


class BackendStats(ApiModel):
    """One worker as this router sees it."""

    name: str
    url: str
    revision: str
    healthy: bool
    draining: bool
    ejected: bool
    in_flight: int
    queue_depth: int | None  # the engine's own waiting queue (scraped)
    requests: int  # attempts since the router started
    errors: int
    window: StatsWindow
    oldest_running_seconds: float | None
    kv_usage: float | None  # vllm:kv_cache_usage_perc (0..1), scraped
    gpu: GpuReport | None  # None for CPU workers, or until read


class RevisionStats(ApiModel):
    requests: int
    errors: int
    window: StatsWindow


class QueueStats(ApiModel):
    """Requests waiting in the router for a worker (held ones included)."""

    length: int
    capacity: int


class Demand(ApiModel):
    """What the autoscaler reads besides the load: requests received since
    the router started, and seconds since the last one."""

    arrivals: int = 0
    idle_seconds: float | None = None


class DebugBackends(ApiModel):
    version: Literal[1] = VERSION
    generation: int
    model: str
    backends: list[BackendStats]
    revisions: dict[str, RevisionStats]
    queue: QueueStats
    demand: Demand
