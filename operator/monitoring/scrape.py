"""How Prometheus finds and labels kubeinfer's pods, defined once.

`RELABELINGS` turns a pod found by Kubernetes service discovery into the
labels of `labels.py`. It is rendered twice: into the chart's PodMonitors
(prometheus-operator spells the keys in camelCase) and into a plain
``scrape_configs`` entry for a Prometheus without the operator, which
selects pods by their ``prometheus.io/*`` annotations.
"""

from typing import Any, Final

from kubeinfer.operator.monitoring import labels as lb

JOB: Final = "kubeinfer"
_META: Final = "__meta_kubernetes_pod_"


def _label(key: str) -> str:
    """Service discovery's name for a pod label (non-alphanumerics become _)."""
    return _META + "label_" + "".join(ch if ch.isalnum() else "_" for ch in key)


# Pod metadata -> target labels; an empty source (a router has no revision)
# leaves the label out.
RELABELINGS: Final[list[dict[str, Any]]] = [
    {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": lb.NAMESPACE},
    {"sourceLabels": [_META + "name"], "targetLabel": lb.POD},
    {"sourceLabels": [_META + "node_name"], "targetLabel": lb.NODE},
    {"sourceLabels": [_label("kubeinfer.io/service")], "targetLabel": lb.SERVICE},
    {"sourceLabels": [_label("kubeinfer.io/revision")], "targetLabel": lb.REVISION},
    {"sourceLabels": [_label("app.kubernetes.io/component")], "targetLabel": lb.COMPONENT},
]

# What the annotation-based job keeps and where it scrapes.
_ANNOTATION_RULES: Final[list[dict[str, Any]]] = [
    # kubeinfer's pods only (workers, routers, the operator) ...
    {
        "sourceLabels": [_label("app.kubernetes.io/part-of")],
        "regex": "kubeinfer",
        "action": "keep",
    },
    # ... that ask to be scraped, and are running.
    {
        "sourceLabels": [_META + "annotation_prometheus_io_scrape"],
        "regex": "true",
        "action": "keep",
    },
    {"sourceLabels": [_META + "phase"], "regex": "Running", "action": "keep"},
    {
        "sourceLabels": [_META + "annotation_prometheus_io_path"],
        "regex": "(.+)",
        "targetLabel": "__metrics_path__",
    },
    # One target per pod: the annotated port on the pod's IP (role: pod
    # lists every container port; the rewritten duplicates collapse).
    {
        "sourceLabels": [_META + "annotation_prometheus_io_port", _META + "ip"],
        "regex": r"(\d+);(.+)",
        "replacement": "$2:$1",
        "targetLabel": "__address__",
    },
]


def _snake(rule: dict[str, Any]) -> dict[str, Any]:
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(key, key): value for key, value in rule.items()}


def scrape_config(interval: str = "15s") -> list[dict[str, Any]]:
    """The plain ``scrape_configs`` entry (helm/kubeinfer/files/scrape-config.yaml)."""
    return [
        {
            "job_name": JOB,
            "scrape_interval": interval,
            "kubernetes_sd_configs": [{"role": "pod"}],
            "relabel_configs": [_snake(r) for r in (*_ANNOTATION_RULES, *RELABELINGS)],
        }
    ]


def pod_monitor_relabelings() -> list[dict[str, Any]]:
    """The PodMonitors' relabelings (prometheus-operator adds namespace and pod itself)."""
    return [r for r in RELABELINGS if r["targetLabel"] not in (lb.NAMESPACE, lb.POD)]
