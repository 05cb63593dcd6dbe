"""End to end: real OpenAI-client traffic through the router while the
operator rolls out bad and good revisions, kills workers and restarts
itself. Every request is counted; none may fail.

Load is bounded: a fixed number of concurrent clients, each stopping when
the scenario ends or after a hard cap of requests.
"""

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster.client import KubeClient
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
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load
from kubeinfer.operator.api.constants import ANNOTATION_ROLLOUT, LABEL_REPLICA, LABEL_REVISION
from kubeinfer.operator.api.debugbackends import DebugBackends
from prometheus_client.parser import text_string_to_metric_families
from rollout_helpers import rollout_phase, service, until

# Each test drives whole rollouts (analysis windows, model loads) on 2 cores.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


async def plugin(kubeconfig: str, *args: str) -> str:
    """`kubectl kubeinfer ARGS` (the installed plugin), as a user runs it."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "kubectl-kubeinfer"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": kubeconfig},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def samples(text: str) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    found: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return found


async def test_bad_canary_rolls_back_and_good_one_promotes_with_zero_failed_requests(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    apply_isvc(kube, namespace, service("llm"))
    wait_condition(kube, namespace, "llm", "Ready", timeout=90)
    stable = get_isvc(kube, namespace, "llm")["status"]["stableRevision"]
    load = Load(router_url(kube, namespace, "llm"), "sim-model")
    async with load.running():
        await until(lambda: load.total() >= 20, 30, "traffic to flow")
        # A canary whose engine fails 60 % of requests: analysis catches it
        # and the operator rolls back, while the router retries every failed
        # attempt on a stable worker.
        apply_isvc(kube, namespace, service("llm", errorRate=0.6))
        await until(
            lambda: rollout_phase(kube, namespace, "llm") == "Failed", 90, "the automatic rollback"
        )
        rolled_back = wait_condition(kube, namespace, "llm", "RolledBack", timeout=5)
        assert "canary error rate" in rolled_back["message"]
        assert get_isvc(kube, namespace, "llm")["status"]["stableRevision"] == stable
        await until(
            lambda: all(
                p["metadata"]["labels"]["kubeinfer.io/revision"] == stable
                for p in worker_pods(kube, namespace, "llm")
            ),
            60,
            "the canary pods to be gone",
        )
        # A good revision (faster engine): promoted step by step.
        apply_isvc(kube, namespace, service("llm", tpotMs=0.5))
        good = await until(
            lambda: (
                (s := get_isvc(kube, namespace, "llm")["status"]).get("stableRevision") != stable
                and s["rollout"]["phase"] == "Idle"
                and s["stableRevision"]
            ),
            120,
            "the promotion of the good revision",
        )
        await until(
            lambda: (
                {
                    p["metadata"]["labels"]["kubeinfer.io/revision"]
                    for p in worker_pods(kube, namespace, "llm")
                }
                == {good}
            ),
            60,
            "old pods drained away",
        )
    assert load.outcomes["failed"] == 0, load.failures[:5]
    assert load.outcomes["ok"] > 50
    assert load.outcomes["stream-ok"] > 10
    history = [h["outcome"] for h in get_isvc(kube, namespace, "llm")["status"]["revisionHistory"]]
    assert history == ["Initial", "Promoted"]


async def test_killed_worker_costs_no_request(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    apply_isvc(kube, namespace, service("sturdy", replicas=3))
    wait_condition(kube, namespace, "sturdy", "Ready", timeout=90)
    load = Load(router_url(kube, namespace, "sturdy"), "sim-model", stream_every=1_000_000)
    async with load.running():
        await until(lambda: load.total() >= 30, 30, "traffic to flow")
        victim = worker_pods(kube, namespace, "sturdy")[0]["metadata"]["name"]
        before = load.total()
        kill_pod(Path(local_cluster.root), namespace, victim)
        await until(lambda: load.total() >= before + 100, 60, "100 more requests after the kill")
        wait_condition(kube, namespace, "sturdy", "Ready", timeout=60)
    assert load.outcomes["failed"] == 0, load.failures[:5]


async def test_operator_killed_right_after_a_pod_create_continues_without_duplicates(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess
) -> None:
    # The dangerous moment for a restart: the operator has just created a
    # canary pod and not yet recorded what it did next.
    apply_isvc(kube, namespace, service("resume", replicas=2))
    wait_condition(kube, namespace, "resume", "Ready", timeout=90)
    first = get_isvc(kube, namespace, "resume")["status"]["stableRevision"]
    load = Load(router_url(kube, namespace, "resume"), "sim-model", clients=2)
    async with load.running():
        apply_isvc(kube, namespace, service("resume", tpotMs=0.5))

        def canary_pods() -> list[str]:
            return [
                p["metadata"]["name"]
                for p in worker_pods(kube, namespace, "resume")
                if p["metadata"]["labels"][LABEL_REVISION] != first
            ]

        created = await until(canary_pods, 60, "the canary pod to be created")
        running_operator.kill()
        try:
            names_at_kill = {p["metadata"]["name"] for p in worker_pods(kube, namespace, "resume")}
        finally:
            running_operator.start()

        def promoted() -> str | None:
            status = get_isvc(kube, namespace, "resume").get("status", {})
            stable = status.get("stableRevision")
            done = rollout_phase(kube, namespace, "resume") == "Idle" and stable != first
            return stable if done else None

        stable = await until(promoted, 150, "the rollout to finish with a new stable revision")
    pods = worker_pods(kube, namespace, "resume")
    replicas = [p["metadata"]["labels"][LABEL_REPLICA] for p in pods]
    assert sorted(replicas) == ["0", "1"], (names_at_kill, [p["metadata"]["name"] for p in pods])
    assert {p["metadata"]["labels"][LABEL_REVISION] for p in pods} == {stable}
    # The canary pod made before the kill was kept, not made twice.
    assert set(created) <= {p["metadata"]["name"] for p in pods}
    assert load.outcomes["failed"] == 0, load.failures[:5]
    operator_never_wrote_the_spec(get_isvc(kube, namespace, "resume"))


def operator_never_wrote_the_spec(isvc: dict[str, Any]) -> None:
    """The RBAC grants `patch` on InferenceServices (kopf's finalizer and
    annotations), so the rule list can't prove it: the API server's
    managedFields can. Only the user (kubectl here) owns spec fields."""
    entries = isvc["metadata"]["managedFields"]
    ours = [e for e in entries if not e["manager"].startswith("kubectl")]
    assert any(e.get("subresource") == "status" for e in ours), entries
    for entry in ours:
        assert "f:spec" not in entry.get("fieldsV1", {}), entry
    users = [e for e in entries if e["manager"].startswith("kubectl")]
    assert any("f:spec" in e.get("fieldsV1", {}) for e in users), entries


async def test_manual_pause_promote_abort_and_undo(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    apply_isvc(kube, namespace, service("manual", replicas=2))
    wait_condition(kube, namespace, "manual", "Ready", timeout=90)
    first = get_isvc(kube, namespace, "manual")["status"]["stableRevision"]
    kube.kubectl("annotate", "-n", namespace, "infsvc/manual", "kubeinfer.io/rollout=pause")
    apply_isvc(kube, namespace, service("manual", tpotMs=0.5))
    await until(lambda: rollout_phase(kube, namespace, "manual") == "Paused", 60, "the pause")
    kube.kubectl(
        "annotate", "-n", namespace, "infsvc/manual", "kubeinfer.io/rollout=promote", "--overwrite"
    )
    second = await until(
        lambda: (
            (s := get_isvc(kube, namespace, "manual")["status"])["rollout"]["phase"] == "Idle"
            and s["stableRevision"] != first
            and s["stableRevision"]
        ),
        120,
        "the manual promotion",
    )
    annotations = get_isvc(kube, namespace, "manual")["metadata"].get("annotations") or {}
    assert "kubeinfer.io/rollout" not in annotations
    # Undo restores the first revision's spec; it rolls out like any change.
    out = await plugin(local_cluster.kubeconfig, "rollout", "undo", "manual", "-n", namespace)
    assert "rolled back" in out
    await until(
        lambda: get_isvc(kube, namespace, "manual")["status"].get("canaryRevision") == first,
        30,
        "the undo to start",
    )
    kube.kubectl(
        "annotate", "-n", namespace, "infsvc/manual", "kubeinfer.io/rollout=abort", "--overwrite"
    )
    await until(lambda: rollout_phase(kube, namespace, "manual") == "Failed", 60, "the abort")
    assert get_isvc(kube, namespace, "manual")["status"]["stableRevision"] == second


async def test_paused_slow_canary_resumed_with_the_plugin_is_rolled_back_on_latency(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess, local_cluster: ClusterState
) -> None:
    """`kubectl kubeinfer rollout resume` and `status` on a live rollout;
    a canary that only got slower (no errors) is rolled back by the latency
    ratio; the operator's own /metrics say so."""
    kubeconfig = local_cluster.kubeconfig
    started = time.monotonic()

    def step(what: str) -> None:  # where the time goes, when this test is slow
        print(f"{time.monotonic() - started:6.1f}s {what}")

    def slow(**simulator: Any) -> dict[str, Any]:
        return simulated_service(
            "slow",
            1,
            rollout={"stepIntervalSeconds": 2, "analysis": {"minRequests": 10}},
            worker={"simulator": simulator, "drainSeconds": 1},
        )

    apply_isvc(kube, namespace, slow())
    wait_condition(kube, namespace, "slow", "Ready", timeout=90)
    step("Ready")
    stable = get_isvc(kube, namespace, "slow")["status"]["stableRevision"]
    before = samples(await asyncio.to_thread(running_operator.metrics))

    kube.kubectl("annotate", "-n", namespace, "infsvc/slow", f"{ANNOTATION_ROLLOUT}=pause")
    # 500 ms more per answer: the p99 ratio is far above 1.5 even when a busy
    # machine makes stable's p99 several times its usual few ms.
    apply_isvc(kube, namespace, slow(addedLatencyMs=500))
    base = router_url(kube, namespace, "slow")
    load = Load(base, "sim-model")
    async with load.running():
        await until(lambda: rollout_phase(kube, namespace, "slow") == "Paused", 60, "the pause")
        step("Paused")
        canary = get_isvc(kube, namespace, "slow")["status"]["canaryRevision"]

        def canary_requests() -> int:
            with urllib.request.urlopen(f"{base}/debug/backends", timeout=10) as answer:
                stats = DebugBackends.model_validate_json(answer.read()).revisions
            return stats[canary].requests if canary in stats else 0

        # The slow canary serves its share, as many requests as analysis needs, and the
        # pause still holds it: nothing is judged until `resume`.
        await until(lambda: canary_requests() >= 10, 60, "10 requests on the paused canary")
        assert rollout_phase(kube, namespace, "slow") == "Paused"
        step("10 canary requests while paused")
        out = await plugin(kubeconfig, "rollout", "resume", "slow", "-n", namespace)
        assert out == "inferenceservice slow: resume requested\n"
        step("resumed")
        await until(
            lambda: rollout_phase(kube, namespace, "slow") == "Failed", 90, "the latency rollback"
        )
        step("Failed")
    assert load.outcomes["failed"] == 0, load.failures[:5]
    isvc = get_isvc(kube, namespace, "slow")
    rolled_back = wait_condition(kube, namespace, "slow", "RolledBack", timeout=5)
    assert "canary p99 latency" in rolled_back["message"], rolled_back
    assert "error rate" not in rolled_back["message"], rolled_back
    assert isvc["status"]["stableRevision"] == stable
    # `resume` was consumed: nothing holds the next rollout.
    assert ANNOTATION_ROLLOUT not in (isvc["metadata"].get("annotations") or {})
    shown = await plugin(kubeconfig, "status", "slow", "-n", namespace)
    assert f"Name:       {namespace}/slow" in shown
    assert f"Stable:     {stable}" in shown
    assert "Rollout:    Failed" in shown
    assert "failed: canary p99 latency" in shown
    reason, message = rolled_back["reason"], rolled_back["message"]
    assert f"  RolledBack   True   {reason}: {message}" in shown, shown
    assert canary in message  # the condition names the revision it rolled back

    # The operator's /metrics, scraped as Prometheus would.
    service_labels = (("kubeinfer_io_service", "slow"), ("service_namespace", namespace))

    def gauge(name: str, **labels: str) -> float:
        return after[(name, tuple(sorted((*service_labels, *labels.items()))))]

    def added(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before[key]

    after = samples(await asyncio.to_thread(running_operator.metrics))
    assert gauge("kubeinfer_inferenceservice_rollout_phase", phase="Failed") == 1
    assert gauge("kubeinfer_inferenceservice_rollout_phase", phase="Paused") == 0
    assert gauge("kubeinfer_inferenceservice_replicas_desired") == 1
    assert gauge("kubeinfer_inferenceservice_canary_weight_percent") == 0
    assert gauge("kubeinfer_inferenceservice_revision_info", role="stable", revision=stable) == 1
    assert gauge("kubeinfer_inferenceservice_condition", condition="RolledBack", reason=reason) == 1
    for event in ("Pause", "Resume", "StepFailed", "RolledBack"):
        assert added("kubeinfer_operator_events_total", reason=event) >= 1, event
    assert added("kubeinfer_operator_reconciles_total", result="ok") > 0
    assert added("kubeinfer_operator_reconcile_seconds_count") > 0
