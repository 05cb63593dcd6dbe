"""`kubeinfer demo` (`make demo`): the whole product on the local control plane.

1. start the local cluster (builds it from Go modules the first time);
2. `helm install` the chart: the operator runs as pods (two replicas
   electing a leader, docs/ha.md) with the chart's
   least-privilege RBAC;
3. `kubectl apply` examples/simulated.yaml: 4 simulated GPU workers and a
   router;
4. steady OpenAI-client traffic through the router for the rest of the demo;
5. kill a worker; turn autoscaling on and send a burst (it scales up, then
   autoscaling goes off again); roll out a broken revision (rolled back
   automatically); roll out a good one (promoted step by step);
6. print what every request did, draw what a real Prometheus scraped
   during steps 4-5 (requests/s, errors, p99 latency, canary weight, ready
   replicas, with the kill/scale-up/rollback/promotion moments) into a PNG
   and print its path, then tear the cluster down (``--keep`` leaves it
   running for `eval $(kubeinfer cluster env)`).

Every step waits on a condition with a deadline and stops the demo with the
reason when it is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.build import ensure_all
from kubeinfer.localcluster.certs import pki_paths
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.components import Layout
from kubeinfer.localcluster.demoplot import DemoMonitor, demo_monitor
from kubeinfer.localcluster.failures import admin_client, kill_pod
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c

REPO = Path(__file__).resolve().parents[2]
PLOT = REPO / "build" / "kubeinfer-demo.png"
NAMESPACE = "demo"
NAME = "demo"
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def show(kube: KubeClient, *args: str) -> None:
    print(kube.kubectl(*args).rstrip(), flush=True)


def isvc(kube: KubeClient) -> dict[str, Any]:
    result: dict[str, Any] = kube.get(
        f"/apis/{c.API_VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}/{NAME}"
    )
    return result


def status_field(kube: KubeClient, *path: str) -> Any:
    node: Any = isvc(kube).get("status") or {}
    for key in path:
        node = (node or {}).get(key)
    return node


def wait(check: Callable[[], Any], seconds: float, what: str) -> Any:
    say(f"waiting for {what} ...")
    return wait_for(check, seconds, interval=0.5, what=what)


def patch_simulator(kube: KubeClient, simulator: dict[str, Any]) -> None:
    kube.merge_patch(
        f"/apis/{c.API_VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}/{NAME}",
        {"spec": {"worker": {"simulator": simulator}}},
    )


def install_operator(kube: KubeClient, state: ClusterState, helm: Path) -> None:
    say("helm install kubeinfer (2 operator pods electing a leader, the chart's RBAC)")
    subprocess.run(
        [
            str(helm),
            "upgrade",
            "--install",
            "kubeinfer",
            str(REPO / "helm" / "kubeinfer"),
            "--namespace",
            "kubeinfer-system",
            "--create-namespace",
            "--kubeconfig",
            state.kubeconfig,
            "--wait",
            "--timeout",
            "120s",
        ],
        check=True,
    )
    show(kube, "get", "pods", "-n", "kubeinfer-system", "-o", "wide")


def router_base(kube: KubeClient) -> str:
    selector = f"{c.LABEL_SERVICE}={NAME},{c.LABEL_COMPONENT}={c.COMPONENT_ROUTER}"

    def ready() -> str | None:
        for pod in kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")[
            "items"
        ]:
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(x["type"] == "Ready" and x["status"] == "True" for x in conditions):
                return f"http://{pod['status']['podIP']}:{c.ROUTER_HTTP_PORT}"
        return None

    return str(wait(ready, 60, "a ready router pod"))


async def autoscale_burst(kube: KubeClient, base: str) -> None:
    """Autoscaling on, a burst of traffic, the scale-up; then back to 4 fixed replicas."""
    say("autoscaling on (4..6 workers, 2 requests in flight per worker), then a burst")
    kube.merge_patch(
        f"/apis/{c.API_VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}/{NAME}",
        {
            "spec": {
                "autoscaling": {"minReplicas": 4, "maxReplicas": 6, "targetInFlightPerReplica": 2}
            }
        },
    )
    burst = Load(base, "demo-model", clients=24, stream_every=1_000_000)
    async with burst.running():
        await asyncio.to_thread(
            wait, lambda: isvc(kube)["spec"]["replicas"] > 4, 60, "the autoscaler to add workers"
        )
        await asyncio.to_thread(
            wait,
            lambda: status_field(kube, "readyReplicas") == isvc(kube)["spec"]["replicas"],
            60,
            "the new workers to be ready",
        )
        show(kube, "get", "infsvc", "-n", NAMESPACE, "-o", "wide")
        print(json.dumps(status_field(kube, "autoscaling", "lastDecision"), indent=1), flush=True)
    say(f"burst: {burst.summary()}")
    if burst.outcomes["failed"]:
        raise SystemExit(f"FAILED requests in the burst: {burst.failures[:5]}")
    say("autoscaling off again, back to 4 workers")
    kube.merge_patch(
        f"/apis/{c.API_VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}/{NAME}",
        {"spec": {"autoscaling": None, "replicas": 4}},
    )
    await asyncio.to_thread(
        wait, lambda: status_field(kube, "readyReplicas") == 4, 60, "4 ready workers"
    )


async def scenario(kube: KubeClient, state: ClusterState, monitor: DemoMonitor) -> Load:
    base = router_base(kube)
    say(f"sending OpenAI-client traffic to the router at {base} (4 clients, every 4th streams)")
    load = Load(base, "demo-model", clients=4)
    async with load.running():
        await asyncio.to_thread(wait, lambda: load.total() >= 50, 30, "the first 50 requests")
        pods = kube.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={c.LABEL_COMPONENT}={c.COMPONENT_WORKER}"
        )["items"]
        victim = pods[0]["metadata"]["name"]
        say(f"kill -9 the worker process of {victim} (the router retries, the runtime restarts it)")
        monitor.mark("worker killed")
        kill_pod(Path(state.root), NAMESPACE, victim)
        before = load.total()
        await asyncio.to_thread(
            wait, lambda: load.total() >= before + 100, 60, "100 more requests after the kill"
        )
        say(f"so far: {load.summary()}")

        monitor.mark("scale up")
        await autoscale_burst(kube, base)

        stable = status_field(kube, "stableRevision")
        say("roll out a broken revision (its engine fails half of all requests)")
        monitor.mark("bad canary")
        patch_simulator(kube, {"errorRate": 0.5})
        await asyncio.to_thread(
            wait,
            lambda: status_field(kube, "rollout", "phase") == "Failed",
            120,
            "the automatic rollback",
        )
        monitor.mark("rolled back")
        show(kube, "get", "infsvc", "-n", NAMESPACE)
        status = await asyncio.to_thread(
            subprocess.run,
            [str(Path(sys.executable).parent / "kubeinfer"), "status", NAME, "-n", NAMESPACE],
            capture_output=True,
            text=True,
            check=False,
            env={"KUBECONFIG": state.kubeconfig},
        )
        print(status.stdout, flush=True)

        say("roll out a good revision (faster per-token time): canary 25% -> 50% -> 100%")
        monitor.mark("good canary")
        patch_simulator(kube, {"errorRate": 0.0, "tpotMs": 1})
        await asyncio.to_thread(
            wait,
            lambda: (
                status_field(kube, "rollout", "phase") == "Idle"
                and status_field(kube, "stableRevision") not in (None, stable)
            ),
            180,
            "the promotion",
        )
        monitor.mark("promoted")
        show(kube, "get", "infsvc", "-n", NAMESPACE, "-o", "wide")
        show(kube, "get", "pods", "-n", NAMESPACE, "-o", "wide")
    return load


def run(keep: bool, plot: Path = PLOT) -> int:
    root = Path(tempfile.mkdtemp(prefix="kubeinfer-demo-"))
    say("building (first run: many minutes) and starting the local control plane")
    tools = ensure_all(lambda m: say(m))
    state = controlplane.up(root, progress=lambda m: say(m))
    try:
        kube = admin_client(root)
        show(kube, "get", "nodes", "-L", f"{c.LABEL_GPU_PRODUCT},{c.LABEL_GPU_COUNT}")
        install_operator(kube, state, tools["helm"])
        say("kubectl apply -f examples/simulated.yaml")
        kube.kubectl("create", "namespace", NAMESPACE)
        manifest = yaml.safe_load((REPO / "examples" / "simulated.yaml").read_text())
        kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(manifest))
        kube.kubectl(
            "wait", "-n", NAMESPACE, "--for=condition=Ready", "--timeout=120s", f"infsvc/{NAME}"
        )
        show(kube, "get", "infsvc", "-n", NAMESPACE)
        ca_file = pki_paths(Layout(root).pki).ca.cert
        with demo_monitor(kube, ca_file, [NAMESPACE, "kubeinfer-system"], NAME, say) as monitor:
            try:
                load = asyncio.run(scenario(kube, state, monitor))
            finally:
                # Also when a step failed: the picture shows where it stopped.
                say(f"picture of the run (from Prometheus): {monitor.plot(plot.resolve())}")
        say(f"traffic: {load.summary()}")
        if load.outcomes["failed"]:
            say(f"FAILED requests: {load.failures[:5]}")
            return 1
        say("every request succeeded through a worker kill, a rollback and a promotion")
        return 0
    finally:
        if keep:
            say(f"cluster left running: eval $(kubeinfer cluster --dir {root} env)")
        else:
            controlplane.down(root, progress=lambda m: say(m))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeinfer demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--plot", type=Path, default=PLOT, help="where to write the PNG")
    args = parser.parse_args(argv)
    return run(args.keep, args.plot)
