"""The picture at the end of `make demo`: what a real Prometheus saw.

`DemoMonitor` runs Prometheus (built with the cluster binaries) on loopback,
scraping the demo's router, worker and operator pods every second with the
chart's scrape configuration (pods found by `kubernetes_sd_configs` against
the demo's API server), and notes the demo's moments
(kill, rollback, promotion). `plot()` asks Prometheus for the dashboards'
own queries over the run and draws requests/s, 5xx error rate, p99
latency, canary weight and ready replicas into one PNG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.prometheus import PrometheusServer, kubernetes_prometheus
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.monitoring.dashboards import FLEET, SERVICE, Dashboard
from kubeinfer.operator.monitoring.promql import substitute

RATE = "10s"
# (dashboard, panel title, query indexes, y label, scale)
SERIES: tuple[tuple[Dashboard, str, tuple[int, ...], str, float], ...] = (
    (FLEET, "Requests/s", (0,), "requests/s", 1.0),
    (FLEET, "Error rate (5xx)", (0,), "5xx to clients (%)", 100.0),
    (SERVICE, "Errors/s per GPU", (0,), "failed attempts/s\nper worker (retried)", 1.0),
    (FLEET, "Latency", (1,), "p99 latency (ms)", 1000.0),
    (SERVICE, "Canary weight", (0,), "canary weight (%)", 1.0),
    (SERVICE, "Ready vs desired replicas", (0, 1), "ready / desired\nreplicas", 1.0),
)
# Targets the picture needs before the run starts: operator, router, workers.
COMPONENTS = {"operator", "router", "worker"}


def panel_queries(board: Dashboard, title: str, indexes: tuple[int, ...]) -> list[str]:
    (panel,) = [p for p in board.panels if p.title == title]
    return [panel.queries[i].expr for i in indexes]


@dataclass
class DemoMonitor:
    prometheus: PrometheusServer
    namespace: str
    service: str
    started: float = field(default_factory=time.time)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, what: str) -> None:
        self.marks.append((time.time(), what))

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        end = time.time()
        fig, axes = plt.subplots(len(SERIES), 1, sharex=True, figsize=(11, 2.1 * len(SERIES)))
        for ax, (board, title, indexes, label, scale) in zip(axes, SERIES, strict=True):
            for query in panel_queries(board, title, indexes):
                expr = substitute(query, rate=RATE, namespace=self.namespace, service=self.service)
                for result in self.prometheus.query_range(expr, self.started, end, 1.0):
                    xs = [float(t) - self.started for t, _ in result["values"]]
                    ys = [float(v) * scale for _, v in result["values"]]
                    ax.plot(xs, ys, linewidth=1.2)
            ax.set_ylabel(label, fontsize=8)
            ax.grid(alpha=0.3)
            for at, _what in self.marks:
                ax.axvline(at - self.started, color="tab:red", linestyle="--", linewidth=0.8)
        for at, what in self.marks:
            axes[0].annotate(
                what,
                (at - self.started, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color="tab:red",
                va="top",
                ha="right",
            )
        axes[-1].set_xlabel("seconds (Prometheus, 1 s scrapes, rates over 10 s)")
        fig.suptitle(f"kubeinfer demo: {self.namespace}/{self.service}")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


@contextmanager
def demo_monitor(
    kube: KubeClient,
    ca_file: Path,
    namespaces: list[str],
    service: str,
    say: Callable[[str], None],
) -> Iterator[DemoMonitor]:
    """Prometheus scraping ``namespaces`` (first: the InferenceService's) for the run."""
    with kubernetes_prometheus(kube, ca_file, namespaces) as server:
        say(f"Prometheus {server.url} scrapes the demo's pods every second (Kubernetes SD)")

        def scraped() -> bool:
            up = {
                t["labels"].get("app_kubernetes_io_component")
                for t in server.targets()
                if t["health"] == "up"
            }
            return up >= COMPONENTS

        wait_for(scraped, 60, interval=0.5, what="Prometheus to scrape the demo's pods")
        yield DemoMonitor(server, namespaces[0], service)
