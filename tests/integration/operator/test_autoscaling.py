"""Autoscaling on the local control plane: real operator, routers and
simulated workers; OpenAI-client traffic that counts every request.

Windows are seconds long (set in each spec) so the scenarios fit in about
a minute and a half together.
"""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import (
    OperatorProcess,
    apply_isvc,
    get_isvc,
    router_url,
    simulated_service,
    wait_condition,
    worker_pods,
)
from kubeinfer.localcluster.traffic import Load
from kubeinfer.localcluster.waiting import async_wait_for

pytestmark = pytest.mark.cluster

# ~0.5 s per request (200 ms to the first token, 6 tokens of 50 ms): a few
# clients keep several requests in flight per worker.
SLOW = {"ttftMs": 200, "tpotMs": 50}


def autoscaled(name: str, replicas: int = 1, **autoscaling: Any) -> dict[str, Any]:
    settings = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetInFlightPerReplica": 3,
        "intervalSeconds": 1,
        "scaleUpStabilizationSeconds": 2,
        "scaleDownStabilizationSeconds": 4,
        "maxStepUp": 2,
        **autoscaling,
    }
    return simulated_service(
        name, replicas, autoscaling=settings, worker={"simulator": SLOW, "drainSeconds": 2}
    )


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    async def probe() -> Any:
        return await asyncio.to_thread(check)

    poll: Callable[[], Awaitable[Any]] = probe
    return await async_wait_for(poll, within, interval=0.3, what=what)


def replicas(kube: KubeClient, namespace: str, name: str) -> int:
    return int(get_isvc(kube, namespace, name)["spec"]["replicas"])


def scaling_events(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in items if e.get("reason") in ("ScaledUp", "ScaledDown")]


async def test_spike_scales_up_and_back_down_with_no_failed_request(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    apply_isvc(kube, namespace, autoscaled("spiky"))
    wait_condition(kube, namespace, "spiky", "Ready", timeout=90)
    load = Load(router_url(kube, namespace, "spiky"), "sim-model", clients=9, stream_every=3)
    async with load.running():
        # 9 in flight / 3 per worker: 3 workers (1 -> 3 in one step of at most 2)
        await until(lambda: replicas(kube, namespace, "spiky") == 3, 30, "the scale-up")
        await until(
            lambda: get_isvc(kube, namespace, "spiky")["status"]["readyReplicas"] == 3,
            30,
            "3 ready workers",
        )
        status = get_isvc(kube, namespace, "spiky")["status"]["autoscaling"]
        assert status["lastDecision"]["reason"] == "InFlightAboveTarget"
        assert status["lastDecision"]["fromReplicas"] == 1
        assert status["signals"]["inFlight"] + status["signals"]["queued"] > 3
        table = kube.kubectl("get", "infsvc", "-n", namespace, "spiky")
        assert "DESIRED" in table
        assert "SCALING" in table
    # the load is gone: after the 4 s window, one worker per decision
    await until(lambda: replicas(kube, namespace, "spiky") == 1, 40, "the scale-down")
    await until(lambda: len(worker_pods(kube, namespace, "spiky")) == 1, 30, "drained pods gone")
    assert load.outcomes["failed"] == 0, load.failures[:5]
    assert load.total() > 30
    reasons = [e["reason"] for e in scaling_events(kube, namespace)]
    assert "ScaledUp" in reasons
    assert "ScaledDown" in reasons
    last = get_isvc(kube, namespace, "spiky")["status"]["autoscaling"]["lastDecision"]
    assert (last["reason"], last["toReplicas"]) == ("LoadBelowTarget", 1)


async def test_scale_to_zero_and_back_with_a_held_request(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    body = autoscaled(
        "sleepy",
        minReplicas=0,
        scaleToZeroAfterSeconds=3,
        scaleDownStabilizationSeconds=2,
    )
    body["spec"]["routing"]["holdTimeoutSeconds"] = 60
    apply_isvc(kube, namespace, body)
    wait_condition(kube, namespace, "sleepy", "Ready", timeout=90)
    base = router_url(kube, namespace, "sleepy")
    await until(lambda: replicas(kube, namespace, "sleepy") == 0, 40, "the scale to zero")
    await until(lambda: worker_pods(kube, namespace, "sleepy") == [], 30, "no worker pod")
    wait_condition(kube, namespace, "sleepy", "Ready", reason="ScaledToZero", timeout=10)
    # One request with no worker: the router holds it, the operator sees it
    # waiting and brings a worker back; the client sees a normal answer.
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=90)
    started = time.monotonic()
    try:
        answer = await client.completions.create(model="sim-model", prompt="wake up", max_tokens=4)
    finally:
        await client.close()
    waited = time.monotonic() - started
    assert answer.choices[0].finish_reason in ("length", "stop")
    assert waited > 0.5  # it really waited for a worker
    status = get_isvc(kube, namespace, "sleepy")["status"]
    assert status["autoscaling"]["lastDecision"]["reason"] == "ScaleFromZero"
    assert replicas(kube, namespace, "sleepy") == 1
    reasons = [e["message"].split(":")[0] for e in scaling_events(kube, namespace)]
    assert "Idle" in reasons
    assert "ScaleFromZero" in reasons


async def test_autoscaling_during_a_canary_stays_within_the_gpu_budget(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    body = autoscaled("canary")
    body["spec"]["rollout"] = {
        "steps": [50, 100],
        "stepIntervalSeconds": 3,
        "maxSurge": 1,
        "analysis": {"minRequests": 5},
    }
    apply_isvc(kube, namespace, body)
    wait_condition(kube, namespace, "canary", "Ready", timeout=90)
    stable = get_isvc(kube, namespace, "canary")["status"]["stableRevision"]
    budget = 3 + 1  # maxReplicas + maxSurge
    seen: list[tuple[int, str, int]] = []  # (pods, rollout phase, replicas)
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            obj, pods = await asyncio.gather(
                asyncio.to_thread(get_isvc, kube, namespace, "canary"),
                asyncio.to_thread(worker_pods, kube, namespace, "canary"),
            )
            seen.append((len(pods), obj["status"]["rollout"]["phase"], obj["spec"]["replicas"]))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    load = Load(router_url(kube, namespace, "canary"), "sim-model", clients=9, stream_every=3)
    try:
        async with load.running():
            # a new revision (a faster engine) while the load rises
            update = autoscaled("canary")
            update["spec"]["rollout"] = body["spec"]["rollout"]
            update["spec"]["worker"]["simulator"] = {**SLOW, "tpotMs": 40}
            del update["spec"]["replicas"]  # the operator's to set
            apply_isvc(kube, namespace, update)
            await until(
                lambda: (
                    (s := get_isvc(kube, namespace, "canary")["status"])["stableRevision"] != stable
                    and s["rollout"]["phase"] == "Idle"
                ),
                120,
                "the promotion",
            )
    finally:
        done.set()
        await watcher
    assert load.outcomes["failed"] == 0, load.failures[:5]
    assert max(pods for pods, _, _ in seen) <= budget, seen
    rolling = [r for _, phase, r in seen if phase not in ("Idle", "Failed")]
    assert rolling
    assert max(rolling) == 3, "the service scaled up while the canary ran"
    # no scale-down while the rollout ran: replicas never fell during it
    assert all(b >= a for a, b in itertools.pairwise(rolling)), rolling


async def test_no_gpus_left_holds_replicas_and_is_degraded(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    # The RTX A400 node has 2 GPUs; the load asks for 6 workers.
    body = autoscaled("scarce", maxReplicas=6, targetInFlightPerReplica=2, maxStepUp=4)
    body["spec"]["gpu"] = {"product": "NVIDIA-RTX-A400"}
    apply_isvc(kube, namespace, body)
    wait_condition(kube, namespace, "scarce", "Ready", timeout=90)
    load = Load(router_url(kube, namespace, "scarce"), "sim-model", clients=12, stream_every=3)
    async with load.running():
        # (in a thread: the load's clients run on this event loop)
        degraded = await asyncio.to_thread(
            wait_condition, kube, namespace, "scarce", "Degraded", "True", 40, "InsufficientGPU"
        )
        assert "cannot be scheduled" in degraded["message"]
        status = await until(
            lambda: (
                s
                if (s := get_isvc(kube, namespace, "scarce")["status"]["autoscaling"])["reason"]
                == "InsufficientGPU"
                else None
            ),
            20,
            "the autoscaler to hold on InsufficientGPU",
        )
        held = status["desiredReplicas"]
        names = sorted(p["metadata"]["name"] for p in worker_pods(kube, namespace, "scarce"))
        # three more seconds (three evaluations): the same pending pods, no more
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            pods = sorted(p["metadata"]["name"] for p in worker_pods(kube, namespace, "scarce"))
            assert pods == names, "pending pods were replaced or added"
            assert replicas(kube, namespace, "scarce") == held
            await asyncio.sleep(0.3)
    assert held < 6
    assert load.outcomes["failed"] == 0, load.failures[:5]
