"""kubeinfer's Grafana dashboards, written with grafana-foundation-sdk.

Three dashboards: the fleet, one InferenceService (per GPU), the operator.
Each panel is a `Panel` row of this module (title, unit, PromQL queries);
`build_dashboards()` turns them into Grafana's JSON, which `kubeinfer
monitoring` writes to helm/kubeinfer/files/dashboards/ (the chart ships it
in ConfigMaps for Grafana's sidecar). Queries use only the metric names the
components export and the target labels of `labels.py`; tests parse every
query and check every name against live /metrics.

Panels that count rare events (retries, ejections, Xids) fall back to 0
with ``or``, so an empty panel means "not scraped", never "nothing
happened".
"""

import json
from dataclasses import dataclass, field
from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)
from kubeinfer.operator.monitoring import labels as lb
from kubeinfer.operator.monitoring.labels import pods, services

RATE: Final = "$__rate_interval"
DATASOURCE: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS: Final = ["kubeinfer"]
_ISVC: Final = f"{lb.NAMESPACE}, {lb.SERVICE}"
_OP_ISVC: Final = f"{lb.SERVICE_NAMESPACE}, {lb.SERVICE}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...] = (lb.VAR_NAMESPACE, lb.VAR_SERVICE)
    extra: dict[str, Any] = field(default_factory=dict)


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _quantiles(metric: str, by: str, legend: str) -> tuple[Query, ...]:
    return tuple(
        q(
            f"histogram_quantile({quantile}, sum by ({by}, le) "
            f"(rate({metric}_bucket{pods()}[{RATE}])))",
            f"{legend} p{int(quantile * 100)}",
        )
        for quantile in (0.5, 0.99)
    )


def _zero_unless(expr: str, fallback_metric: str, by: str) -> str:
    """``expr``, or 0 for every group of ``fallback_metric`` that has no sample of it."""
    return f"({expr}) or (sum by ({by}) ({fallback_metric}{pods()}) * 0)"


def _error_ratio(by: str) -> str:
    total = f"sum by ({by}) (rate(kubeinfer_router_requests_total{pods()}[{RATE}]))"
    server_errors = pods('code=~"5.."')
    errors = f"sum by ({by}) (rate(kubeinfer_router_requests_total{server_errors}[{RATE}]))"
    return f"({errors} or {total} * 0) / {total}"


FLEET = Dashboard(
    uid="kubeinfer-fleet",
    title="kubeinfer / Fleet",
    description="Every InferenceService at a glance: replicas, traffic, errors, latency, GPUs.",
    panels=(
        Panel(
            "InferenceServices",
            "none",
            (q(f"count(kubeinfer_inferenceservice_replicas_desired{services()})", "services"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "GPUs (workers) by product and readiness",
            "none",
            (
                q(
                    f"sum by (gpu_product, ready) (kubeinfer_inferenceservice_workers{services()})",
                    "{{gpu_product}} ready={{ready}}",
                ),
            ),
            kind="stat",
            width=6,
        ),
        Panel(
            "GPUs by product and health",
            "none",
            (
                q(f"count by (name) (kubeinfer_gpu_info{pods()})", "{{name}} total"),
                q(
                    f"sum by (name) (kubeinfer_gpu_healthy{pods()} * on (namespace, pod)"
                    f" group_left (name) kubeinfer_gpu_info{pods()})",
                    "{{name}} healthy",
                ),
            ),
            kind="stat",
        ),
        Panel(
            "Ready vs desired replicas",
            "none",
            (
                q(
                    f"sum by ({_OP_ISVC}) (kubeinfer_inferenceservice_replicas_ready{services()})",
                    "{{kubeinfer_io_service}} ready",
                ),
                q(
                    f"sum by ({_OP_ISVC}) "
                    f"(kubeinfer_inferenceservice_replicas_desired{services()})",
                    "{{kubeinfer_io_service}} desired",
                ),
            ),
        ),
        Panel(
            "Requests/s",
            "reqps",
            (
                q(
                    f"sum by ({_ISVC}) (rate(kubeinfer_router_requests_total{pods()}[{RATE}]))",
                    "{{kubeinfer_io_service}}",
                ),
            ),
        ),
        Panel(
            "Error rate (5xx)",
            "percentunit",
            (q(_error_ratio(_ISVC), "{{kubeinfer_io_service}}"),),
        ),
        Panel(
            "Latency",
            "s",
            _quantiles(
                "kubeinfer_router_backend_request_duration_seconds",
                _ISVC,
                "{{kubeinfer_io_service}}",
            ),
        ),
        Panel(
            "Time to first token",
            "s",
            _quantiles("kubeinfer_router_backend_ttft_seconds", _ISVC, "{{kubeinfer_io_service}}"),
        ),
        Panel(
            "Tokens/s",
            "none",
            (
                q(
                    f"sum by ({_ISVC}) (rate(vllm:generation_tokens_total{pods()}[{RATE}]))",
                    "{{kubeinfer_io_service}} generated",
                ),
                q(
                    f"sum by ({_ISVC}) (rate(vllm:prompt_tokens_total{pods()}[{RATE}]))",
                    "{{kubeinfer_io_service}} prompt",
                ),
            ),
        ),
        Panel(
            "Queue",
            "none",
            (
                q(
                    f"sum by ({_ISVC}) (kubeinfer_router_queue_length{pods()})",
                    "{{kubeinfer_io_service}} router queue",
                ),
                q(
                    f"sum by ({_ISVC}) (vllm:num_requests_waiting{pods()})",
                    "{{kubeinfer_io_service}} waiting in engines",
                ),
            ),
        ),
    ),
)

SERVICE = Dashboard(
    uid="kubeinfer-inferenceservice",
    title="kubeinfer / InferenceService",
    description="One InferenceService per GPU (worker pod): traffic, latency, GPU, KV cache, "
    "router health checks, canary rollout.",
    panels=(
        Panel(
            "Ready vs desired replicas",
            "none",
            (
                q(f"sum(kubeinfer_inferenceservice_replicas_ready{services()})", "ready"),
                q(f"sum(kubeinfer_inferenceservice_replicas_desired{services()})", "desired"),
                q(f"sum(kubeinfer_inferenceservice_replicas{services()})", "pods"),
            ),
        ),
        Panel(
            "Rollout phase",
            "none",
            (q(f"kubeinfer_inferenceservice_rollout_phase{services()} == 1", "{{phase}}"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "Canary weight",
            "percent",
            (q(f"max(kubeinfer_inferenceservice_canary_weight_percent{services()})", "canary"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "Requests/s per revision (canary split)",
            "reqps",
            (
                q(
                    f"sum by (revision) "
                    f"(rate(kubeinfer_router_revision_requests_total{pods()}[{RATE}]))",
                    "{{revision}}",
                ),
            ),
        ),
        Panel(
            "Requests/s per GPU (worker pod)",
            "reqps",
            (
                q(
                    f"sum by (backend) "
                    f"(rate(kubeinfer_router_backend_requests_total{pods()}[{RATE}]))",
                    "{{backend}}",
                ),
            ),
        ),
        Panel(
            "Errors/s per GPU",
            "reqps",
            (
                q(
                    f"sum by (backend) "
                    f"(rate(kubeinfer_router_backend_errors_total{pods()}[{RATE}]))",
                    "{{backend}}",
                ),
            ),
        ),
        Panel(
            "Latency per GPU",
            "s",
            _quantiles(
                "kubeinfer_router_backend_request_duration_seconds", "backend", "{{backend}}"
            ),
        ),
        Panel(
            "Time to first token per GPU",
            "s",
            _quantiles("kubeinfer_router_backend_ttft_seconds", "backend", "{{backend}}"),
        ),
        Panel(
            "Tokens/s per GPU",
            "none",
            (
                q(
                    f"sum by (pod) (rate(vllm:generation_tokens_total{pods()}[{RATE}]))",
                    "{{pod}}",
                ),
            ),
        ),
        Panel(
            "Running and waiting requests per GPU",
            "none",
            (
                q(f"sum by (pod) (vllm:num_requests_running{pods()})", "{{pod}} running"),
                q(f"sum by (pod) (vllm:num_requests_waiting{pods()})", "{{pod}} waiting"),
            ),
        ),
        Panel(
            "KV-cache usage per GPU",
            "percentunit",
            (q(f"max by (pod) (vllm:kv_cache_usage_perc{pods()})", "{{pod}}"),),
        ),
        Panel(
            "GPU utilisation",
            "percentunit",
            (q(f"max by (pod) (kubeinfer_gpu_utilization_ratio{pods()})", "{{pod}}"),),
        ),
        Panel(
            "GPU memory used",
            "percentunit",
            (
                q(
                    f"max by (pod) (kubeinfer_gpu_memory_used_bytes{pods()})"
                    f" / max by (pod) (kubeinfer_gpu_memory_total_bytes{pods()})",
                    "{{pod}}",
                ),
            ),
        ),
        Panel(
            "GPU temperature",
            "celsius",
            (q(f"max by (pod) (kubeinfer_gpu_temperature_celsius{pods()})", "{{pod}}"),),
        ),
        Panel(
            "GPU power",
            "watt",
            (q(f"max by (pod) (kubeinfer_gpu_power_watts{pods()})", "{{pod}}"),),
        ),
        Panel(
            "GPU health, Xid events and ECC errors",
            "none",
            (
                q(f"min by (pod) (kubeinfer_gpu_healthy{pods()})", "{{pod}} healthy"),
                q(
                    _zero_unless(
                        f"sum by (pod) (kubeinfer_gpu_xid_events_total{pods()})",
                        "kubeinfer_gpu_healthy",
                        "pod",
                    ),
                    "{{pod}} Xid events",
                ),
                q(
                    f"sum by (pod, type) (kubeinfer_gpu_ecc_errors_total{pods()})",
                    "{{pod}} ECC {{type}}",
                ),
            ),
        ),
        Panel(
            "Router retries and ejections",
            "none",
            (
                q(
                    f"sum by (reason) (increase(kubeinfer_router_retries_total{pods()}[{RATE}]))"
                    " or vector(0)",
                    "retries {{reason}}",
                ),
                q(
                    f"sum by (backend, reason) "
                    f"(increase(kubeinfer_router_ejections_total{pods()}[{RATE}])) or vector(0)",
                    "ejections {{backend}} {{reason}}",
                ),
                q(
                    f"sum by (backend) (kubeinfer_router_backend_ejected{pods()})",
                    "ejected now {{backend}}",
                ),
            ),
        ),
        Panel(
            "Router queue",
            "none",
            (
                q(f"sum by (pod) (kubeinfer_router_queue_length{pods()})", "{{pod}} waiting"),
                q(f"sum by (pod) (kubeinfer_router_queue_capacity{pods()})", "{{pod}} capacity"),
            ),
        ),
    ),
)

OPERATOR = Dashboard(
    uid="kubeinfer-operator",
    title="kubeinfer / Operator",
    description="The operator's own work: reconciles, their duration and errors, events.",
    variables=(),
    panels=(
        Panel(
            "Reconciles/s",
            "ops",
            (
                q(
                    f"sum by (result) (rate(kubeinfer_operator_reconciles_total[{RATE}]))",
                    "{{result}}",
                ),
            ),
        ),
        Panel(
            "Reconcile duration",
            "s",
            tuple(
                q(
                    f"histogram_quantile({quantile}, sum by (le) "
                    f"(rate(kubeinfer_operator_reconcile_seconds_bucket[{RATE}])))",
                    f"p{int(quantile * 100)}",
                )
                for quantile in (0.5, 0.99)
            ),
        ),
        Panel(
            "Failing reconciles",
            "percentunit",
            (
                q(
                    'sum(rate(kubeinfer_operator_reconciles_total{result="error"}'
                    f"[{RATE}])) / sum(rate(kubeinfer_operator_reconciles_total[{RATE}]))",
                    "errors",
                ),
            ),
        ),
        Panel(
            "Events by reason",
            "none",
            (
                q(
                    f"sum by (reason) (increase(kubeinfer_operator_events_total[{RATE}]))"
                    " or vector(0)",
                    "{{reason}}",
                ),
            ),
        ),
        Panel(
            "InferenceServices by phase",
            "none",
            (q("sum by (phase) (kubeinfer_inferenceservice_phase)", "{{phase}}"),),
        ),
        Panel(
            "Operator memory",
            "bytes",
            (
                q(
                    f'process_resident_memory_bytes{{{lb.COMPONENT}="operator"}}',
                    "{{pod}}",
                ),
            ),
        ),
    ),
)

DASHBOARDS: Final = (FLEET, SERVICE, OPERATOR)


def _variables(names: tuple[str, ...]) -> list[gd.QueryVariable | gd.DatasourceVariable]:
    out: list[gd.QueryVariable | gd.DatasourceVariable] = [
        gd.DatasourceVariable("datasource").label("Data source").type("prometheus")
    ]
    source = "kubeinfer_inferenceservice_replicas_desired"
    queries = {
        lb.VAR_NAMESPACE: f"label_values({source}, {lb.SERVICE_NAMESPACE})",
        lb.VAR_SERVICE: (
            f'label_values({source}{{{lb.SERVICE_NAMESPACE}=~"${lb.VAR_NAMESPACE}"}}, {lb.SERVICE})'
        ),
    }
    titles = {lb.VAR_NAMESPACE: "Namespace", lb.VAR_SERVICE: "InferenceService"}
    for name in names:
        out.append(
            gd.QueryVariable(name)
            .label(titles[name])
            .datasource(DATASOURCE)
            .query(queries[name])
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    return out


def _panel(panel: Panel) -> timeseries.Panel | stat.Panel:
    built = stat.Panel() if panel.kind == "stat" else timeseries.Panel()
    built.title(panel.title).unit(panel.unit).datasource(DATASOURCE).height(8).span(panel.width)
    if panel.description:
        built.description(panel.description)
    for index, query in enumerate(panel.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + index))
        if query.legend:
            target.legend_format(query.legend)
        built.with_target(target)
    return built


def build_dashboard(spec: Dashboard) -> dict[str, Any]:
    """Grafana's JSON model of one dashboard."""
    board = (
        gd.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(TAGS)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .variables(list(_variables(spec.variables)))
    )
    for panel in spec.panels:
        board.with_panel(_panel(panel))
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render_dashboards() -> dict[str, str]:
    """File name -> JSON text, for helm/kubeinfer/files/dashboards/."""
    return {
        f"{spec.uid}.json": json.dumps(build_dashboard(spec), indent=2, sort_keys=True) + "\n"
        for spec in DASHBOARDS
    }
