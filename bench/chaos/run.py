"""The chaos suite, repeated, on its own local cluster: prints the table of
docs/reliability.md.

Each scenario of kubeinfer.localcluster.chaos runs --repeat times, each
time on a fresh InferenceService (2 workers, 2 router pods, simulated
engine) under counted OpenAI-client load (4 clients, every 3rd request
streams) through a Service proxy in front of the routers. Unlike make test,
the kube-apiserver and etcd restarts run apart, each in its own rollout.

Bounded: each scenario takes 20-80 s plus about 15 s to set up its
service (about 17 minutes with the default --repeat 2).

    .venv/bin/python bench/chaos/run.py [--repeat 2] [--scenarios a,b] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubeinfer.localcluster import chaos, controlplane
from kubeinfer.localcluster.build import ensure_cluster_binaries
from kubeinfer.localcluster.chaos import ChaosResult, ChaosTarget
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.operatorproc import OperatorProcess, install_operator_identity
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import wait_for

Scenario = Callable[[ChaosTarget], Awaitable[ChaosResult]]

SCENARIOS: dict[str, Scenario] = {
    "worker-kills": chaos.worker_killed_repeatedly,
    "worker-kills-2": chaos.worker_killed_repeatedly,
    "worker-kills-2-hold": chaos.worker_killed_repeatedly,
    "router-kill": chaos.router_pod_killed,
    "apiserver-restart": lambda t: chaos.control_plane_restarted_mid_rollout(
        t, ("kube-apiserver",)
    ),
    "etcd-restart": lambda t: chaos.control_plane_restarted_mid_rollout(t, ("etcd",)),
    "node-not-ready": lambda t: chaos.node_not_ready(t, with_router=False),
    "node-with-router-not-ready": lambda t: chaos.node_not_ready(t, with_router=True),
    "node-lost-loading": chaos.node_lost_while_loading,
    "gpus-taken": chaos.all_gpus_taken,
}

# Worker pods per scenario (2 when not named): make test kills workers on 3.
# With 3 workers on the 3 nodes, one of them runs no router pod.
WORKERS = {"worker-kills": 3, "node-not-ready": 3}
# Routing fields per scenario: routers that hold requests while no worker is up.
ROUTING: dict[str, dict[str, Any]] = {"worker-kills-2-hold": {"holdTimeoutSeconds": 10}}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def new_namespace(kube: KubeClient, name: str) -> str:
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(
        lambda: kube.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        30,
        what=f"the default ServiceAccount in {name}",
    )
    return name


def gone(kube: KubeClient, namespace: str) -> None:
    """Delete a namespace and wait until its pods are gone (their GPUs free)."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    kube.delete(path)
    kube.delete(f"/api/v1/namespaces/{namespace}")
    wait_for(lambda: not kube.get(path)["items"], 90, what=f"the pods of {namespace} to be gone")


async def run_all(
    kube: KubeClient, state: ClusterState, names: list[str], repeat: int
) -> list[ChaosResult]:
    results = []
    for round_ in range(repeat):
        for name in names:
            namespace = new_namespace(kube, f"chaos-{name}-{round_}")
            body = chaos.chaos_service("chaos", WORKERS.get(name, 2), ROUTING.get(name))
            async with chaos.under_load(kube, state, namespace, body) as target:
                result = await SCENARIOS[name](target)
            log(f"{name} #{round_ + 1}: {result.model_dump()}")
            if target.load.failures:
                log(f"  first failures: {target.load.failures[:3]}")
            results.append(result)
            gone(kube, namespace)
    return results


def summary(results: list[ChaosResult]) -> str:
    """Per scenario: the sums of failures and duplicates, the median and
    the worst time to the desired state."""
    lines = [
        "| scenario | runs | requests | non-streaming failed | streams failed "
        "| s to desired state (median / max) | duplicate pods | router pods lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in dict.fromkeys(r.scenario for r in results):
        runs = [r for r in results if r.scenario == scenario]
        seconds = [r.seconds_to_desired for r in runs]
        lines.append(
            f"| {scenario} | {len(runs)} | {sum(r.requests for r in runs)} "
            f"| {sum(r.nonstreaming_failed for r in runs)} "
            f"| {sum(r.streams_failed for r in runs)} "
            f"| {statistics.median(seconds):.1f} / {max(seconds):.1f} "
            f"| {sum(r.duplicate_pods for r in runs)} | {sum(r.router_pods_lost for r in runs)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = args.scenarios.split(",")
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    root = Path(tempfile.mkdtemp(prefix="kubeinfer-bench-chaos-"))
    state = controlplane.up(root, progress=log, binaries=ensure_cluster_binaries(log))
    operator: OperatorProcess | None = None
    started = time.monotonic()
    try:
        kube = admin_client(root)
        kubeconfig = install_operator_identity(kube, state, root / "operator-kubeconfig")
        operator = OperatorProcess(kubeconfig, root / "operator.log")
        operator.start()
        results = asyncio.run(run_all(kube, state, names, args.repeat))
    finally:
        if operator is not None:
            operator.stop()
        controlplane.down(root, progress=log)
    print(chaos.markdown_table(results))
    print()
    print(summary(results))
    log(f"{len(results)} runs in {time.monotonic() - started:.0f} s; operator log {root}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.model_dump() for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
