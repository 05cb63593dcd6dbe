"""The scrape configuration the e2e test and the demo give Prometheus
(kubeinfer.localcluster.prometheus): the chart's job, unchanged but for its
discovery, which points at the local API server with least-privilege access."""

from pathlib import Path

import pytest
from kubeinfer.localcluster import prometheus as prom
from kubeinfer.localcluster.prometheus import chart_scrape_job, pod_sd_config
from kubeinfer.operator.monitoring.scrape import scrape_config

SD = pod_sd_config(
    "https://127.0.0.1:6443", Path("/pki/ca.crt"), Path("/w/sd-token"), ["ns-a", "ns-b"]
)


def test_sd_config_is_a_pod_discovery_of_the_named_namespaces() -> None:
    assert SD == {
        "role": "pod",
        "api_server": "https://127.0.0.1:6443",
        "tls_config": {"ca_file": "/pki/ca.crt"},
        "authorization": {"type": "Bearer", "credentials_file": "/w/sd-token"},
        "namespaces": {"names": ["ns-a", "ns-b"]},
    }


def test_job_keeps_the_chart_relabelings_and_replaces_only_the_discovery() -> None:
    (chart,) = scrape_config(interval="1s")
    job = chart_scrape_job(SD, "1s")
    assert job["kubernetes_sd_configs"] == [SD]
    assert {k: v for k, v in job.items() if k != "kubernetes_sd_configs"} == {
        k: v for k, v in chart.items() if k != "kubernetes_sd_configs"
    }
    assert job["relabel_configs"]  # the chart's rules are there, not dropped


@pytest.mark.parametrize("namespace", ["ns-a", "ns-b"])
def test_rbac_grants_list_and_watch_on_pods_only(namespace: str) -> None:
    role = prom._pod_reader(namespace)
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = prom._binding(namespace, "ns-a")
    assert binding["roleRef"]["kind"] == "Role"  # namespaced, never a ClusterRole
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": prom.SD_ACCOUNT, "namespace": "ns-a"}
    ]
