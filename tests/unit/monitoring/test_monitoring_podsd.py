"""Pod discovery over HTTP SD for Debian's Prometheus (kubeinfer.localcluster.podsd):
the labels Prometheus' `role: pod` discovery would attach."""

from typing import Any

from kubeinfer.localcluster.podsd import pod_targets, sanitize

META = "__meta_kubernetes_pod_"


def pod(ip: str | None, containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "llm-abc-0",
            "namespace": "ml",
            "uid": "u1",
            "labels": {"kubeinfer.io/service": "llm", "app.kubernetes.io/component": "worker"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8081"},
        },
        "spec": {"nodeName": "gpu-1", "containers": containers},
        "status": {
            "podIP": ip,
            "hostIP": "10.0.0.1",
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


WORKER = {
    "name": "worker",
    "image": "ghcr.io/kubeinfer/worker:0.1.0",
    "ports": [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "agent", "containerPort": 8081, "protocol": "TCP"},
    ],
}


def test_sanitize_like_prometheus() -> None:
    assert sanitize("kubeinfer.io/service") == "kubeinfer_io_service"
    assert sanitize("app.kubernetes.io/part-of") == "app_kubernetes_io_part_of"


def test_one_target_per_container_port() -> None:
    groups = pod_targets([pod("127.1.0.5", [WORKER])])
    assert [g["targets"] for g in groups] == [["127.1.0.5:8000"], ["127.1.0.5:8081"]]
    labels = groups[1]["labels"]
    assert labels["__meta_kubernetes_namespace"] == "ml"
    assert labels[META + "name"] == "llm-abc-0"
    assert labels[META + "node_name"] == "gpu-1"
    assert labels[META + "ip"] == "127.1.0.5"
    assert labels[META + "phase"] == "Running"
    assert labels[META + "ready"] == "true"
    assert labels[META + "label_kubeinfer_io_service"] == "llm"
    assert labels[META + "labelpresent_kubeinfer_io_service"] == "true"
    assert labels[META + "annotation_prometheus_io_port"] == "8081"
    assert labels[META + "container_name"] == "worker"
    assert labels[META + "container_port_name"] == "agent"
    assert labels[META + "container_port_number"] == "8081"


def test_a_container_without_ports_is_one_portless_target() -> None:
    groups = pod_targets([pod("127.1.0.6", [{"name": "sidecar", "image": "x"}])])
    assert [g["targets"] for g in groups] == [["127.1.0.6"]]
    assert META + "container_port_number" not in groups[0]["labels"]


def test_pods_without_an_ip_are_not_targets() -> None:
    assert pod_targets([pod(None, [WORKER])]) == []
