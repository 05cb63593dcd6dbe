"""Every PromQL expression of every dashboard panel and alert parses (Prometheus'
own parser, through `promtool check rules`) and reads only metric names that
kubeinfer's components export or that real vLLM 0.32 exports.

The exported names come from the components' own exposition code (router,
worker agent, operator) and from the recorded vLLM page
(tests/fixtures/vllm-0.32.0/metrics.txt); the e2e test
(tests/e2e/test_e2e_monitoring.py) checks them once more against live pods.
"""

import time
from pathlib import Path

import pytest
import yaml
from kubeinfer.localcluster.prometheus import PrometheusMissingError, promtool
from kubeinfer.operator.api.status import InferenceServiceStatus
from kubeinfer.operator.metrics import FleetCollector
from kubeinfer.operator.monitoring.alerts import ALERTS
from kubeinfer.operator.monitoring.dashboards import DASHBOARDS
from kubeinfer.operator.monitoring.promql import exposed_names, metric_names, substitute
from kubeinfer.router import metrics as router_metrics
from kubeinfer.worker.agent import Agent, WatchedGpu
from kubeinfer.worker.agenthttp import engine_metrics_up_text
from kubeinfer.worker.agentmetrics import agent_registry
from kubeinfer.worker.config import parse_worker_args
from kubeinfer.worker.nvml import DeviceSelector, Gpu
from kubeinfer.worker.simnvml import SimulatedNvml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

VLLM_METRICS = Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32.0" / "metrics.txt"

PANEL_QUERIES = [
    (f"{board.uid}: {panel.title} [{index}]", query.expr)
    for board in DASHBOARDS
    for panel in board.panels
    for index, query in enumerate(panel.queries)
]
ALERT_QUERIES = [(alert.name, alert.expr) for alert in ALERTS]


def _router_names() -> set[str]:
    empty = {
        "backends": [],
        "counters": {},
        "revisions": {},
        "queue": {"length": 0, "capacity": 0},
        "generation": 0,
    }
    return exposed_names(router_metrics.render(empty).decode())


def _agent_names() -> set[str]:
    config = parse_worker_args(
        ["--engine", "simulated", "--model-spec", '{"name": "m", "source": "o/m"}'], {}
    )
    simulated = SimulatedNvml.one_gpu()
    gpu = Gpu.open(simulated, DeviceSelector())
    agent = Agent(config, WatchedGpu(gpu, gpu.snapshot(time.time()), simulated), ["engine"], {})
    text = generate_latest(agent_registry(agent)) + engine_metrics_up_text(True)
    return exposed_names(text.decode())


def _operator_names() -> set[str]:
    fleet = FleetCollector()
    fleet.record("ns", "llm", 2, InferenceServiceStatus())
    registry = CollectorRegistry()
    registry.register(fleet)
    return exposed_names(generate_latest(REGISTRY).decode() + generate_latest(registry).decode())


EXPORTED = (
    _router_names() | _agent_names() | _operator_names() | exposed_names(VLLM_METRICS.read_text())
)


def test_the_catalogue_has_every_component() -> None:
    for name in (
        "kubeinfer_router_requests_total",
        "kubeinfer_gpu_utilization_ratio",
        "kubeinfer_worker_engine_metrics_up",
        "kubeinfer_operator_reconcile_seconds_bucket",
        "kubeinfer_inferenceservice_replicas_ready",
        "vllm:kv_cache_usage_perc",
    ):
        assert name in EXPORTED


@pytest.mark.parametrize(("where", "expr"), PANEL_QUERIES + ALERT_QUERIES)
def test_reads_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where} reads no metric"
    assert names <= EXPORTED, f"{where} reads {sorted(names - EXPORTED)}, which nothing exports"


def test_every_panel_query_parses(tmp_path: Path) -> None:
    # Recording rules are the one thing promtool parses without a server.
    rules = [
        {"record": f"kubeinfer:panel_{i}", "expr": substitute(expr, rate="1m")}
        for i, (_, expr) in enumerate(PANEL_QUERIES)
    ]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    try:
        result = promtool("check", "rules", str(path))
    except PrometheusMissingError as error:
        pytest.fail(str(error))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_query_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    rule = {"record": "kubeinfer:bad", "expr": "sum by (pod (rate(x[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [rule]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0
