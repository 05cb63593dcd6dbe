"""The operator's Prometheus metrics (served on --metrics-port at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "kubeinfer_operator_reconciles_total",
    "Reconciles of InferenceServices, by result (ok or error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "kubeinfer_operator_reconcile_seconds",
    "Time of one reconcile (observe, plan, act).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter(
    "kubeinfer_operator_events_total",
    "Transitions and actions posted as Kubernetes Events, by reason.",
    ["reason"],
)
AUTOSCALING_DECISIONS = Counter(
    "kubeinfer_operator_autoscaling_decisions_total",
    "Changes of replicas made by the autoscaler, by direction (up, down) and reason.",
    ["direction", "reason"],
)
AUTOSCALING_REPLICAS = Gauge(
    "kubeinfer_operator_autoscaling_replicas",
    "Replicas per InferenceService: desired (the decision), recommended (the signals, "
    "before windows and limits) and ready.",
    ["namespace", "service", "kind"],
)
AUTOSCALING_SIGNAL = Gauge(
    "kubeinfer_operator_autoscaling_signal",
    "The routers' load signals read by the autoscaler: in_flight, queued, idle_seconds, "
    "ttft_p90_ms.",
    ["namespace", "service", "signal"],
)
