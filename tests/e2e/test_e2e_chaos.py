"""The chaos suite under load (kubeinfer.localcluster.chaos): faults while
real OpenAI-client traffic, streaming and not, goes through a Service in
front of two router pods. Every request is counted.

Two tests: the worker killed every 10 s for 60 s on its own service (its
timing is the scenario), and the other faults one after another on one
shared service and load run, each measured in its own window and each
starting from the desired state. bench/chaos/ repeats them for the table
in docs/reliability.md.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from kubeinfer.localcluster import chaos
from kubeinfer.localcluster.chaos import ChaosResult, ChaosTarget
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    simulated_service,
    wait_condition,
)
from kubeinfer.localcluster.serviceproxy import ServiceProxy
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load
from kubeinfer.operator.api import constants as c

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]


def chaos_service(name: str, replicas: int = 2) -> dict[str, Any]:
    return simulated_service(
        name,
        replicas,
        routing={"routerReplicas": 2, "retries": 3},
        rollout={
            "stepIntervalSeconds": 2,
            # Analysis is not what this suite tests: a loaded 2-core machine
            # makes p99 ratios of a few requests noisy.
            "analysis": {"minRequests": 5, "maxLatencyRatio": 5, "maxTtftRatio": 5},
        },
        worker={"simulator": {"ttftMs": 2, "tpotMs": 1, "loadSeconds": 1}, "drainSeconds": 2},
    )


@asynccontextmanager
async def under_load(
    kube: KubeClient, state: ClusterState, namespace: str, body: dict[str, Any]
) -> AsyncIterator[ChaosTarget]:
    name = body["metadata"]["name"]
    apply_isvc(kube, namespace, body)
    wait_condition(kube, namespace, name, "Ready", timeout=90)
    selector = f"{c.LABEL_SERVICE}={name},{c.LABEL_COMPONENT}={c.COMPONENT_ROUTER}"
    proxy = ServiceProxy(kube, namespace, selector, c.ROUTER_HTTP_PORT)
    async with proxy.running():
        load = Load(proxy.url, "sim-model", clients=4, stream_every=3)
        target = ChaosTarget(kube, state, namespace, name, body, load)
        await target.until(lambda: len(proxy.endpoints) == 2, 60, "both routers behind the proxy")
        async with load.running():
            await target.until(lambda: load.total() >= 20, 30, "traffic to flow")
            yield target
    print("\n" + chaos.markdown_table(target.history))
    print(load.summary(), load.failures[:5])


def assert_loss_bounded(result: ChaosResult, load: Load) -> None:
    """Nothing is lost unless a router pod died, and then at most what was
    in flight on it: one request per client connection. No duplicate pods."""
    assert result.requests > 20, result
    lost = result.nonstreaming_failed + result.streams_failed
    assert lost <= result.router_pods_lost * load.clients, (result, load.failures[:5])
    assert result.duplicate_pods == 0, result
    assert result.most_worker_pods <= result.allowed_worker_pods, result


async def test_worker_killed_every_10_s_for_60_s(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    async with under_load(kube, local_cluster, namespace, chaos_service("battered")) as target:
        result = await chaos.worker_killed_repeatedly(target, every=10, during=60)
    # A stream already sending tokens from a killed worker cannot be saved
    # (vLLM has no resumable streams); a request not yet answered is retried.
    assert result.requests > 200, result
    assert result.nonstreaming_failed == 0, (result, target.load.failures[:5])
    assert result.duplicate_pods == 0, result
    assert result.most_worker_pods <= result.allowed_worker_pods
    assert result.seconds_to_desired < 60, result


async def test_router_control_plane_node_and_gpu_faults(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    async with under_load(kube, local_cluster, namespace, chaos_service("shaken")) as target:
        results = [
            await chaos.router_pod_killed(target),
            # Both in one rollout keeps make test short; bench/chaos/ runs them apart.
            await chaos.control_plane_restarted_mid_rollout(target, ("kube-apiserver", "etcd")),
            await chaos.node_not_ready(target),
            await chaos.node_lost_while_loading(target),
        ]
        await chaos.scale_to(target, 2)
        results.append(await chaos.all_gpus_taken(target))
    for result in results:
        assert_loss_bounded(result, target.load)
    assert results[0].router_pods_lost == 1
    # The control plane away for seconds: the data plane does not notice.
    assert results[1].nonstreaming_failed + results[1].streams_failed == 0, results[1]
