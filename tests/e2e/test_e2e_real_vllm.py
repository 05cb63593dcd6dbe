"""End to end with real vLLM: no-GPU workers (vLLM's CPU backend) serving the
tiny model on the local control plane, the router in front, the real
`openai` client counting every request.

One service goes through the whole life in one test, because each vLLM
start costs one to three minutes of this machine's two cores: serve, lose
an engine, scale down with a drain, roll out a new revision judged on
vLLM's own numbers.
Load is bounded (few clients, a request cap) and stops with each phase.
"""

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
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
from kubeinfer.localcluster.waiting import async_wait_for
from kubeinfer.operator.api import constants as c

# Four vLLM starts (1-3 min each on a busy machine) plus the phases.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

MODEL = "tiny"
# Two vLLM engines starting at once on two busy cores.
START_S = 420.0


def cpu_service(name: str, model: Path, replicas: int = 2, **engine_args: Any) -> dict[str, Any]:
    """An InferenceService on vLLM's CPU backend with the tiny model from a local path."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": MODEL,
                "source": str(model),
                "engineArgs": {
                    "maxModelLen": 512,
                    "dtype": "float32",
                    # No torch.compile: minutes of gcc per pod on two cores.
                    "extraArgs": ["--enforce-eager"],
                    **engine_args,
                },
            },
            "replicas": replicas,
            "gpu": {"count": 0},
            "routing": {"routerReplicas": 1, "retries": 3},
            "rollout": {
                "steps": [50, 100],
                "stepIntervalSeconds": 5,
                "maxSurge": 1,
                # Errors are judged strictly, latency loosely: a fresh CPU
                # engine's first requests pay one-time costs (a canary's p99
                # TTFT was 4.5x stable's in one run, all of it warm-up) and a
                # shared 2-core machine is noisy.
                "analysis": {"minRequests": 10, "maxLatencyRatio": 10, "maxTtftRatio": 10},
            },
            "worker": {
                "engine": "vllm",
                "resources": {"cpu": "1", "memory": "3Gi"},
                "drainSeconds": 20,
            },
        },
    }


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    async def probe() -> Any:
        return await asyncio.to_thread(check)

    poll: Callable[[], Awaitable[Any]] = probe
    return await async_wait_for(poll, within, interval=0.5, what=what)


def revisions(kube: KubeClient, namespace: str, name: str) -> set[str]:
    return {p["metadata"]["labels"][c.LABEL_REVISION] for p in worker_pods(kube, namespace, name)}


def replica_restarts(kube: KubeClient, namespace: str, pod: str) -> int | None:
    """The restart count of a worker pod as status reports it; None once it is gone."""
    for row in get_isvc(kube, namespace, "real")["status"].get("replicaStatuses") or []:
        if row["pod"] == pod:
            return int(row.get("restarts", 0))
    return None


def engine_pid(root: Path, namespace: str, pod: str) -> int:
    """The vLLM API server: the worker agent's child process."""
    (agent,) = kill_pod(root, namespace, pod, "worker", signal.SIGCONT)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == agent.pid:
            return int(entry)
    raise AssertionError(f"no engine process under the agent of {pod} (pid {agent.pid})")


def check_well_formed(base_url: str) -> None:
    """Chat and completions, streaming and not, through the router: vLLM's shapes."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("length", "stop")
    assert chat.usage is not None
    assert chat.usage.completion_tokens <= 8
    completion = client.completions.create(model=MODEL, prompt="one two", max_tokens=8)
    assert completion.choices[0].finish_reason in ("length", "stop")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tell me a story"}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "length"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 24
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)


async def test_real_vllm_serves_survives_an_engine_kill_rolls_out_and_scales_down(
    kube: KubeClient,
    namespace: str,
    running_operator: OperatorProcess,
    local_cluster: ClusterState,
    tiny_model: Path,
) -> None:
    root = Path(local_cluster.root)
    apply_isvc(kube, namespace, cpu_service("real", tiny_model))
    wait_condition(kube, namespace, "real", "Ready", timeout=START_S)
    pods = worker_pods(kube, namespace, "real")
    for pod in pods:
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert not any("gpu" in resource for resource in limits), limits
    url = router_url(kube, namespace, "real")
    await asyncio.to_thread(check_well_formed, url)

    # 1. An engine dies under non-streaming load: the router retries on the
    # other worker, the agent reports it, the worker comes back.
    load = Load(url, MODEL, clients=2, stream_every=1_000_000, pause_seconds=0.05)
    async with load.running():
        await until(lambda: load.total() >= 20, 60, "traffic to flow")
        victim = pods[0]["metadata"]["name"]
        restarts_before = replica_restarts(kube, namespace, victim)
        os.kill(engine_pid(root, namespace, victim), signal.SIGKILL)
        await until(
            lambda: replica_restarts(kube, namespace, victim) != restarts_before,
            90,
            "the worker to restart or be replaced after its engine died",
        )
        wait_condition(kube, namespace, "real", "Ready", timeout=START_S)
        await until(
            lambda: get_isvc(kube, namespace, "real")["status"]["readyReplicas"] == 2,
            START_S,
            "both workers ready again",
        )
        before = load.total()
        await until(lambda: load.total() >= before + 20, 60, "traffic after the recovery")
    assert load.outcomes["failed"] == 0, load.failures[:5]
    assert load.outcomes["ok"] >= 40

    # 2. Scale 2 -> 1: the removed worker drains with streams and
    # non-streaming requests in flight; nothing fails.
    load = Load(url, MODEL, clients=3, stream_every=2, pause_seconds=0.02)
    async with load.running():
        await until(lambda: load.total() >= 20, 60, "traffic before the scale-down")
        kube.kubectl("scale", "-n", namespace, "infsvc/real", "--replicas=1")
        await until(lambda: len(worker_pods(kube, namespace, "real")) == 1, 120, "the scale-down")
        before = load.total()
        await until(lambda: load.total() >= before + 20, 60, "traffic after the scale-down")
    assert load.outcomes["failed"] == 0, load.failures[:5]
    assert load.outcomes["stream-ok"] >= 10

    # 3. A new revision (other engine arguments) is judged on real vLLM's
    # numbers from the routers and promoted. At one replica, so that it
    # costs one more vLLM start, not two.
    stable = get_isvc(kube, namespace, "real")["status"]["stableRevision"]
    judged: list[dict[str, Any]] = []

    def promoted() -> str | None:
        status = get_isvc(kube, namespace, "real")["status"]
        analysis = (status.get("rollout") or {}).get("lastAnalysis")
        if analysis and analysis.get("canary", {}).get("requests", 0) > 0:
            judged.append(analysis)
        done = status["stableRevision"] != stable and status["rollout"]["phase"] == "Idle"
        return status["stableRevision"] if done else None

    load = Load(url, MODEL, clients=2, stream_every=3, pause_seconds=0.05)
    async with load.running():
        apply_isvc(kube, namespace, cpu_service("real", tiny_model, replicas=1, maxNumSeqs=8))
        new = await until(promoted, 2 * START_S, "the promotion of the new revision")
        await until(lambda: revisions(kube, namespace, "real") == {new}, START_S, "old pods gone")
    assert load.outcomes["failed"] == 0, load.failures[:5]
    assert judged, "no analysis with canary traffic was recorded"
    assert all(a["passed"] is not False for a in judged), judged
    assert judged[-1]["canary"]["errors"] == 0
    history = [h["outcome"] for h in get_isvc(kube, namespace, "real")["status"]["revisionHistory"]]
    assert history == ["Initial", "Promoted"]
