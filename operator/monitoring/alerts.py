"""kubeinfer's alert rules, defined once.

Rendered into a plain Prometheus rules file
(helm/kubeinfer/files/prometheus-rules.yaml) that the chart's
PrometheusRule embeds as it is. Each alert has a runbook section in
docs/operations.md (its anchor is the alert name in lower case) and a
`promtool test rules` case that fires it and one that keeps it silent
(tests/unit/monitoring/alerts-test.yaml).
"""

from dataclasses import dataclass
from typing import Any, Final

from kubeinfer.operator.monitoring import labels as lb

RUNBOOK_BASE: Final = "https://github.com/kubeinfer/kubeinfer/blob/main/docs/operations.md"
GROUP: Final = "kubeinfer"

# Thresholds (docs/operations.md explains them; copy the rules to change them).
ERROR_RATE: Final = 0.05
TTFT_P99_SECONDS: Final = 2.0
QUEUE_FULL_RATIO: Final = 0.9
RECONCILE_ERROR_RATIO: Final = 0.1

_ISVC: Final = f"{lb.NAMESPACE}, {lb.SERVICE}"
_OPERATOR_ISVC: Final = f"{lb.SERVICE_NAMESPACE}, {lb.SERVICE}"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK_BASE}#{self.name.lower()}",
            },
        }


def _error_ratio(rate: str) -> str:
    total = f"sum by ({_ISVC}) (rate(kubeinfer_router_requests_total[{rate}]))"
    errors = f'sum by ({_ISVC}) (rate(kubeinfer_router_requests_total{{code=~"5.."}}[{rate}]))'
    return f"{errors} / {total}"


ALERTS: Final[tuple[Alert, ...]] = (
    Alert(
        "KubeinferNoReadyWorker",
        f"kubeinfer_inferenceservice_replicas_ready == 0"
        f" and on ({_OPERATOR_ISVC}) kubeinfer_inferenceservice_replicas_desired > 0",
        "2m",
        "critical",
        "{{ $labels.service_namespace }}/{{ $labels.kubeinfer_io_service }} has no ready worker",
        "Every request to this InferenceService fails or waits: none of its worker pods "
        "is in rotation (replicas > 0).",
    ),
    Alert(
        "KubeinferWorkersNotReady",
        "kubeinfer_inferenceservice_replicas_ready < kubeinfer_inferenceservice_replicas_desired",
        "15m",
        "warning",
        "{{ $labels.service_namespace }}/{{ $labels.kubeinfer_io_service }} runs with fewer "
        "ready workers than desired",
        "Only {{ $value }} workers are ready, fewer than spec.replicas, for 15 minutes.",
    ),
    Alert(
        "KubeinferHighErrorRate",
        f"{_error_ratio('5m')} > {ERROR_RATE}",
        "5m",
        "critical",
        "{{ $labels.namespace }}/{{ $labels.kubeinfer_io_service }} answers "
        "{{ $value | humanizePercentage }} of requests with 5xx",
        f"More than {ERROR_RATE:.0%} of client requests through the router failed for 5 minutes.",
    ),
    Alert(
        "KubeinferHighTTFT",
        "histogram_quantile(0.99, sum by "
        f"({_ISVC}, le) (rate(kubeinfer_router_backend_ttft_seconds_bucket[5m])))"
        f" > {TTFT_P99_SECONDS}",
        "10m",
        "warning",
        "{{ $labels.namespace }}/{{ $labels.kubeinfer_io_service }} p99 time to first token "
        "is {{ $value | humanizeDuration }}",
        f"The 99th percentile time to first token stayed above {TTFT_P99_SECONDS:g} s "
        "for 10 minutes.",
    ),
    Alert(
        "KubeinferRouterSaturated",
        f"(max by ({_ISVC}) (kubeinfer_router_queue_length / kubeinfer_router_queue_capacity)"
        f" > {QUEUE_FULL_RATIO})"
        f' or (sum by ({_ISVC}) (rate(kubeinfer_router_requests_total{{code="429"}}[5m])) > 0)',
        "5m",
        "warning",
        "{{ $labels.namespace }}/{{ $labels.kubeinfer_io_service }}: the router's queue is "
        "full or it answers 429",
        "Clients are turned away (429 with Retry-After) or wait in a nearly full queue: "
        "the workers cannot keep up with the load.",
    ),
    Alert(
        "KubeinferGPUFault",
        "kubeinfer_gpu_healthy == 0"
        " or on (namespace, pod) (sum by (namespace, pod, kubeinfer_io_service, node)"
        " (increase(kubeinfer_gpu_xid_events_total[10m])) > 0)",
        "0m",
        "critical",
        "GPU fault on {{ $labels.node }} (pod {{ $labels.namespace }}/{{ $labels.pod }})",
        "The worker's agent saw a fatal GPU fault (Xid, uncorrectable ECC or a lost GPU); "
        "the operator replaces the pod and avoids the node.",
    ),
    Alert(
        "KubeinferGPUStuck",
        "(max by (namespace, pod, kubeinfer_io_service, node)"
        " (kubeinfer_gpu_utilization_ratio) == 0)"
        " and on (namespace, pod) (sum by (namespace, pod) (vllm:num_requests_running) > 0)",
        "5m",
        "warning",
        "GPU of {{ $labels.namespace }}/{{ $labels.pod }} idles with requests running",
        "vLLM reports running requests but the GPU has been 0 % busy for 5 minutes: "
        "the engine is probably hung.",
    ),
    Alert(
        "KubeinferCanaryRolledBack",
        'kubeinfer_inferenceservice_condition{condition="RolledBack"} == 1',
        "0m",
        "warning",
        "{{ $labels.service_namespace }}/{{ $labels.kubeinfer_io_service }}: a canary was "
        "rolled back",
        "The new revision failed its analysis (or was aborted) and the stable revision "
        "serves all traffic again; the failed revision is not retried until the spec changes.",
    ),
    Alert(
        "KubeinferInsufficientGPU",
        'kubeinfer_inferenceservice_condition{condition="Degraded", reason="InsufficientGPU"} == 1',
        "5m",
        "warning",
        "{{ $labels.service_namespace }}/{{ $labels.kubeinfer_io_service }}: worker pods "
        "cannot be scheduled (no free GPU)",
        "Some worker pods stay Pending because no node has a free GPU that fits.",
    ),
    Alert(
        "KubeinferOperatorDown",
        'absent(kubeinfer_operator_reconciles_total{result="ok"})',
        "5m",
        "critical",
        "The kubeinfer operator is not scraped",
        "No operator exports metrics: nothing replaces failed workers or moves rollouts on.",
    ),
    Alert(
        "KubeinferOperatorNoLeader",
        "sum(kubeinfer_operator_leader) != 1",
        "2m",
        "critical",
        "{{ $value }} kubeinfer operators lead (one should)",
        "Operators are scraped but none holds the leader-election Lease (or, never "
        "expected, more than one says it does): a takeover takes about 10 s, this lasted "
        "2 minutes. With none, nothing replaces failed workers or moves rollouts on.",
    ),
    Alert(
        "KubeinferReconcileErrors",
        'sum(rate(kubeinfer_operator_reconciles_total{result="error"}[5m]))'
        " / sum(rate(kubeinfer_operator_reconciles_total[5m]))"
        f" > {RECONCILE_ERROR_RATIO}",
        "10m",
        "warning",
        "{{ $value | humanizePercentage }} of the operator's reconciles fail",
        "The operator cannot talk to the API server or the routers for most reconciles.",
    ),
)


def rules_file(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The rules file; ``overrides`` maps alert names to a shorter ``for``
    (tests only: the e2e test cannot wait 15 minutes)."""
    rules = []
    for alert in ALERTS:
        rule = alert.rule()
        if overrides and alert.name in overrides:
            rule["for"] = overrides[alert.name]
        rules.append(rule)
    return {"groups": [{"name": GROUP, "rules": rules}]}
