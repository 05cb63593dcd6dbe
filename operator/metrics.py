"""The operator's Prometheus metrics (served on --metrics-port at /metrics)."""

from prometheus_client import Counter, Histogram

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
