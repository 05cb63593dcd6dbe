"""End to end: a real Prometheus scrapes the local cluster's operator,
router and worker pods through Kubernetes service discovery against the
local API server, with the chart's scrape configuration, rules and
dashboards.

The operator runs as pods, installed by the chart (`helm install`, two
replicas electing a leader: both are scraped, one acts); the session's
operator process is stopped meanwhile, so that only the chart's operators
act on the InferenceService. (Not `operator.watchNamespaces`: with it, kopf
first retries listing namespaces, which the least-privilege ClusterRole
does not grant, for about 55 s.)

Prometheus is upstream's, built with the cluster binaries (Debian's 2.42
has no Kubernetes SD; its promtool checks the rules in tests/unit). It
discovers the pods with `kubernetes_sd_configs` (role: pod, the test's
namespace only) as a ServiceAccount that may only list and watch pods
there, and relabels them with the chart's rules unchanged. It scrapes
every second and evaluates the shipped rules every second; a test-only
override shortens one `for` (15 min in production) so that a killed worker
fires its alert within the test.

Asserted: every target is up; every metric name a dashboard or an alert
reads is on the live /metrics pages; a killed worker fires
KubeinferWorkersNotReady; a rolled-back canary fires
KubeinferCanaryRolledBack; every query of every dashboard panel returns
data.
"""

import asyncio
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster.build import HELM, BuildError, ensure_target
from kubeinfer.localcluster.certs import pki_paths
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.components import Layout
from kubeinfer.localcluster.failures import kill_pod
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    get_isvc,
    router_url,
    simulated_service,
    wait_condition,
    worker_pods,
)
from kubeinfer.localcluster.prometheus import (
    SD_TOKEN_FILE,
    PrometheusServer,
    kubernetes_prometheus,
)
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load
from kubeinfer.localcluster.waiting import async_wait_for, wait_for
from kubeinfer.operator.monitoring.alerts import ALERTS, rules_file
from kubeinfer.operator.monitoring.dashboards import DASHBOARDS
from kubeinfer.operator.monitoring.promql import exposed_names, metric_names, substitute

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
RELEASE = "mon"
NAME = "watched"
# Test-only: production waits 15 minutes before calling it an outage.
FOR_OVERRIDES = {"KubeinferWorkersNotReady": "0s"}
# Grafana's $__rate_interval for a 1 s scrape interval would be 4 s; a
# longer window keeps rates non-empty between bursts of the test's load.
RATE_WINDOW = "20s"


@pytest.fixture
def operator_pod(
    kube: KubeClient,
    namespace: str,
    local_cluster: ClusterState,
    running_operator: OperatorProcess,
) -> Iterator[None]:
    """The chart's operator as a pod (the session's operator process paused)."""
    try:
        helm = ensure_target(HELM, lambda _: None) / "helm"
    except BuildError as error:
        pytest.fail(f"cannot build helm: {error}")
    running_operator.stop()
    base = [str(helm), "--kubeconfig", local_cluster.kubeconfig, "--namespace", namespace]
    install = [
        *base, "install", RELEASE, str(REPO / "helm" / "kubeinfer"),
        "--set", "operator.resyncSeconds=1",
        "--wait", "--timeout", "120s",
    ]  # fmt: skip
    try:
        subprocess.run(
            install,
            check=True,
            capture_output=True,
            timeout=180,
        )
        yield
    finally:
        subprocess.run([*base, "uninstall", RELEASE, "--wait"], capture_output=True, timeout=120)
        running_operator.start()


@pytest.fixture
def ca_file(local_cluster: ClusterState) -> Path:
    return pki_paths(Layout(Path(local_cluster.root)).pki).ca.cert


@pytest.fixture
def prometheus(kube: KubeClient, namespace: str, ca_file: Path) -> Iterator[PrometheusServer]:
    rules = {"kubeinfer-rules.yaml": rules_file(FOR_OVERRIDES)}
    try:
        with kubernetes_prometheus(kube, ca_file, [namespace], rules) as server:
            yield server
    except BuildError as error:
        pytest.fail(f"cannot build prometheus: {error}")


def status_as(server: str, ca_file: Path, token: str, method: str, path: str) -> int:
    """The API server's answer to ``token``'s request (no body)."""
    request = urllib.request.Request(
        server + path, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def firing(alert: str) -> str:
    return f'ALERTS{{alertname="{alert}", alertstate="firing"}}'


def fired_since(prometheus: PrometheusServer, alert: str, since: float) -> list[dict[str, Any]]:
    """The alert's series if it fired at any evaluation after ``since`` (a
    brief outage may fire and resolve between two polls of the test)."""
    seconds = int(time.time() - since) + 1
    return prometheus.query(f"max_over_time({firing(alert)}[{seconds}s])")


def silent_now(prometheus: PrometheusServer, alert: str) -> float:
    """Asserts ``alert`` is not firing; returns the time to watch it from."""
    assert not prometheus.query(firing(alert)), f"{alert} fires before the fault"
    return time.time()


async def until_fired(
    prometheus: PrometheusServer, alert: str, since: float, within: float
) -> dict[str, Any]:
    async def check() -> list[dict[str, Any]]:
        return await asyncio.to_thread(fired_since, prometheus, alert, since)

    found = await async_wait_for(check, within, interval=0.5, what=f"{alert} to fire")
    return dict(found[0]["metric"])


def live_names(prometheus: PrometheusServer) -> set[str]:
    names: set[str] = set()
    for target in prometheus.targets():
        with urllib.request.urlopen(target["scrapeUrl"], timeout=5) as page:
            names |= exposed_names(page.read().decode())
    return names


STARTED = [time.monotonic()]


def step(what: str) -> None:
    """Progress with elapsed time (shown when the test fails, or with -s)."""
    print(f"[{time.monotonic() - STARTED[0]:6.1f}s] {what}", flush=True)


async def test_prometheus_sees_every_panel_and_the_alerts_fire(
    kube: KubeClient,
    namespace: str,
    local_cluster: ClusterState,
    ca_file: Path,
    operator_pod: None,
    prometheus: PrometheusServer,
) -> None:
    spec = simulated_service(NAME, replicas=2, worker={"simulator": {"loadSeconds": 3}})
    spec["spec"]["rollout"]["analysis"] = {"minRequests": 10, "maxErrorRate": 0.05}
    spec["spec"]["routing"]["retries"] = 3
    STARTED[0] = time.monotonic()
    step("apply the InferenceService")
    apply_isvc(kube, namespace, spec)
    wait_condition(kube, namespace, NAME, "Ready", timeout=90)
    step("Ready")

    # Operator, router and both workers, found through the API server.
    def all_up() -> list[dict[str, Any]] | None:
        targets = prometheus.targets()
        components = sorted(t["labels"].get("app_kubernetes_io_component", "") for t in targets)
        up = all(t["health"] == "up" for t in targets)
        expected = ["operator", "operator", "router", "worker", "worker"]
        return targets if up and components == expected else None

    targets = wait_for(all_up, 60, interval=0.5, what="5 healthy scrape targets")
    step("5 targets up (2 operators: leader and standby)")
    for target in targets:
        labels = target["labels"]
        assert labels["namespace"] == namespace
        assert labels["node"]
        assert labels["pod"]
        if labels["app_kubernetes_io_component"] != "operator":
            assert labels["kubeinfer_io_service"] == NAME

    # Prometheus' credentials list and watch this namespace's pods, nothing else.
    token = (prometheus.workdir / SD_TOKEN_FILE).read_text()
    pod = targets[0]["labels"]["pod"]
    for method, path, expected in [
        ("GET", f"/api/v1/namespaces/{namespace}/pods", 200),
        ("GET", f"/api/v1/namespaces/{namespace}/pods?watch=1&timeoutSeconds=1", 200),
        ("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}", 403),
        ("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod}", 403),
        ("GET", f"/api/v1/namespaces/{namespace}/secrets", 403),
        ("GET", "/api/v1/pods", 403),
        ("GET", "/api/v1/namespaces/default/pods", 403),
        ("GET", "/api/v1/nodes", 403),
    ]:
        got = status_as(kube.server, ca_file, token, method, path)
        assert got == expected, f"{method} {path} as Prometheus: {got}, expected {expected}"

    # Every name the dashboards and alerts read is on a live page.
    live = live_names(prometheus)
    for where, expr in [
        *((p.title, q.expr) for d in DASHBOARDS for p in d.panels for q in p.queries),
        *((a.name, a.expr) for a in ALERTS),
    ]:
        missing = metric_names(expr) - live
        assert not missing, f"{where} reads {sorted(missing)}, absent from live /metrics"

    load = Load(router_url(kube, namespace, NAME), "sim-model", clients=3)

    async def flowing() -> bool:
        return load.total() >= 30

    async with load.running():
        await async_wait_for(flowing, 30, what="traffic to flow")
        # The rollout to Ready fired it once; wait until Prometheus saw Ready.
        await async_wait_for(
            lambda: asyncio.to_thread(
                lambda: not prometheus.query(firing("KubeinferWorkersNotReady"))
            ),
            30,
            what="KubeinferWorkersNotReady to resolve after the start",
        )
        victim = worker_pods(kube, namespace, NAME)[0]["metadata"]["name"]
        since = silent_now(prometheus, "KubeinferWorkersNotReady")
        step(f"kill {victim}")
        kill_pod(Path(local_cluster.root), namespace, victim)
        fired = await until_fired(prometheus, "KubeinferWorkersNotReady", since, 60)
        step("KubeinferWorkersNotReady fired")
        assert fired["kubeinfer_io_service"] == NAME
        assert fired["service_namespace"] == namespace
        await asyncio.to_thread(wait_condition, kube, namespace, NAME, "Ready", "True", 60)

        spec["spec"]["worker"]["simulator"]["errorRate"] = 0.6
        since = silent_now(prometheus, "KubeinferCanaryRolledBack")
        step("roll out a bad canary")
        apply_isvc(kube, namespace, spec)
        fired = await until_fired(prometheus, "KubeinferCanaryRolledBack", since, 120)
        step("KubeinferCanaryRolledBack fired")
        assert fired["kubeinfer_io_service"] == NAME
        assert get_isvc(kube, namespace, NAME)["status"]["rollout"]["phase"] == "Failed"

        # Every query of every panel returns data, as Grafana would send it.
        still_empty: list[str] = []

        async def all_have_data() -> bool:
            still_empty.clear()
            for board in DASHBOARDS:
                for panel in board.panels:
                    for query in panel.queries:
                        expr = substitute(
                            query.expr, rate=RATE_WINDOW, namespace=namespace, service=NAME
                        )
                        if not await asyncio.to_thread(prometheus.query, expr):
                            still_empty.append(f"{board.uid}: {panel.title}: {expr}")
            return not still_empty

        try:
            await async_wait_for(all_have_data, 30, interval=1, what="every panel to have data")
            step("every panel query has data")
        except AssertionError:
            raise AssertionError("panels without data:\n" + "\n".join(still_empty)) from None
    assert load.outcomes["failed"] == 0, load.failures[:5]
    # Prometheus' own view of the run, for the record when this fails.
    print(json.dumps(prometheus.query("sum by (alertname) (ALERTS)")))
