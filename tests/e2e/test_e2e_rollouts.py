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
    wait_condition,
    worker_pods,
)
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load
from kubeinfer.operator.api.constants import LABEL_REPLICA, LABEL_REVISION
from rollout_helpers import rollout_phase, service, until

# Each test drives whole rollouts (analysis windows, model loads) on 2 cores.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


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
    out = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).parent / "kubeinfer"),
            "rollout",
            "undo",
            "manual",
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KUBECONFIG": local_cluster.kubeconfig},
    )
    assert "rolled back" in out.stdout
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
