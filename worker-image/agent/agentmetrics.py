"""The agent's `/metrics`: the GPU as NVML sees it, and the agent's state.

Read from the agent's last NVML snapshot at scrape time; no NVML call
happens in a scrape. A worker without a GPU (--device cpu) exports the
agent's state only: no kubeinfer_gpu_* series at all, rather than zeros
that a dashboard would read as an idle GPU.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from kubeinfer.worker.nvml import GpuSnapshot
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from kubeinfer.worker.agent import Agent


class AgentCollector:
    def __init__(self, agent: "Agent"):
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        yield from self._agent_metrics()
        snapshot = self._agent.last_snapshot
        if snapshot is not None:
            yield from self._gpu_metrics(snapshot)

    def _agent_metrics(self) -> Iterator[Metric]:
        from kubeinfer.worker.agent import Phase

        agent = self._agent
        ready, _why = agent.readiness()
        yield GaugeMetricFamily("kubeinfer_worker_ready", "1 when /ready answers 200.", ready)
        phase = GaugeMetricFamily(
            "kubeinfer_worker_phase", "The agent's phase (1 for the current one).", labels=["phase"]
        )
        for name in Phase:
            phase.add_metric([name.value], 1.0 if agent.phase is name else 0.0)
        yield phase
        yield GaugeMetricFamily(
            "kubeinfer_worker_engine_requests_in_flight",
            "Running plus waiting requests at the engine's last scrape by the agent.",
            agent.engine_load.in_flight,
        )

    def _gpu_metrics(self, snap: GpuSnapshot) -> Iterator[Metric]:
        agent = self._agent
        keys, values = ["gpu"], [snap.uuid]

        def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
            if value is None:
                return
            family = GaugeMetricFamily(name, doc, labels=keys)
            family.add_metric(values, value)
            yield family

        info = GaugeMetricFamily(
            "kubeinfer_gpu_info", "The worker's GPU.", labels=["gpu", "name", "driver"]
        )
        info.add_metric([snap.uuid, snap.name, snap.driver_version], 1.0)
        yield info
        yield GaugeMetricFamily(
            "kubeinfer_gpu_healthy",
            "0 once a fatal GPU fault was seen.",
            0.0 if agent.gpu_fault else 1.0,
        )
        utilization = snap.utilization_percent
        yield from gauge(
            "kubeinfer_gpu_utilization_ratio",
            "GPU busy fraction (NVML utilisation / 100).",
            None if utilization is None else utilization / 100.0,
        )
        yield from gauge(
            "kubeinfer_gpu_memory_used_bytes", "GPU memory in use.", snap.memory_used_bytes
        )
        yield from gauge(
            "kubeinfer_gpu_memory_total_bytes", "GPU memory in all.", snap.memory_total_bytes
        )
        yield from gauge(
            "kubeinfer_gpu_temperature_celsius", "GPU temperature.", snap.temperature_celsius
        )
        yield from gauge("kubeinfer_gpu_power_watts", "GPU power draw.", snap.power_watts)
        ecc = CounterMetricFamily(
            "kubeinfer_gpu_ecc_errors",
            "ECC errors since the driver loaded (NVML volatile counters).",
            labels=["gpu", "type"],
        )
        counts = (("corrected", snap.ecc_corrected), ("uncorrected", snap.ecc_uncorrected))
        for kind, count in counts:
            if count is not None:
                ecc.add_metric([snap.uuid, kind], count)
        yield ecc
        xids = CounterMetricFamily(
            "kubeinfer_gpu_xid_events", "NVML critical Xid events seen.", labels=["gpu", "xid"]
        )
        for xid, count in sorted(agent.xid_counts.items()):
            xids.add_metric([snap.uuid, str(xid)], count)
        yield xids


def agent_registry(agent: "Agent") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry
