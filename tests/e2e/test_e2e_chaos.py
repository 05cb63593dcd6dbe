"""The chaos suite under load (kubeinfer.localcluster.chaos): faults while
real OpenAI-client traffic, streaming and not, goes through a Service in
front of two router pods. Every request is counted.

Two tests: the worker killed every 10 s for 60 s on its own service (its
timing is the scenario), and the other faults one after another on one
shared service and load run, each measured in its own window and each
starting from the desired state. bench/chaos/ repeats them for the table
in docs/reliability.md.
"""

import pytest
from kubeinfer.localcluster import chaos
from kubeinfer.localcluster.chaos import ChaosResult, chaos_service, under_load
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import OperatorProcess
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]


def assert_loss_bounded(result: ChaosResult, load: Load) -> None:
    """No non-streaming request is lost unless a router pod died, and then
    at most what was in flight on it: one per client connection. (Streams
    cut by a dying worker are counted, not bounded: vLLM can't resume them.)
    No duplicate pods."""
    assert result.requests > 20, result
    bound = result.router_pods_lost * load.clients
    assert result.nonstreaming_failed <= bound, (result, load.failures[:5])
    assert result.duplicate_pods == 0, result
    assert result.most_worker_pods <= result.allowed_worker_pods, result


async def test_worker_killed_every_10_s_for_60_s(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    # Three workers: with two, a kill every 10 s can find the other one still
    # being replaced (docs/reliability.md has the figures of both).
    body = chaos_service("battered", replicas=3)
    async with under_load(kube, local_cluster, namespace, body) as target:
        result = await chaos.worker_killed_repeatedly(target, every=10, during=60)
    print("\n" + chaos.markdown_table([result]))
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
    print("\n" + chaos.markdown_table(results))
    for result in results:
        assert_loss_bounded(result, target.load)
    router, control_plane, gpus = results[0], results[1], results[-1]
    assert router.nonstreaming_failed + router.streams_failed <= target.load.clients, router
    # The Deployment brings the killed router back. (all_gpus_taken itself
    # fails unless the service said Degraded: InsufficientGPU meanwhile.)
    assert router.seconds_to_desired < 60, router
    # The control plane away for seconds: the data plane does not notice,
    # and the operator raises no false alarm (a 403 for a moment after the
    # API server's restart is no missing permission).
    assert control_plane.nonstreaming_failed + control_plane.streams_failed == 0, control_plane
    assert "Forbidden" not in control_plane.degraded_reasons, control_plane
    # No process dies when the GPUs are taken: nothing may fail at all.
    assert gpus.nonstreaming_failed + gpus.streams_failed == 0, gpus
    assert "InsufficientGPU" in gpus.degraded_reasons, gpus
