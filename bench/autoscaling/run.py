"""Autoscaling benchmark on the local control plane (simulated GPUs).

Scenarios (each on a fresh InferenceService, open-loop load so a backlog
shows as latency and 429s instead of slowing the client down):

- step:     a 4x traffic step with autoscaling on: time from the step to
            the decision, to the new pods Ready, to the router queue
            draining; failed requests; p50/p99 latency during the spike;
- step-off: the same step at a fixed 1 replica (autoscaling off);
- wave:     a load oscillating between 1x and 4x every 30 s for
            --wave-seconds: scaling events (flapping shows as many);
- zero:     scale to zero after idle, then one request: its latency
            (pod start + model load + queue) and its outcome, --zero-rounds times.

Every figure comes from this run; nothing is pass/fail. Prints a table and,
with --json, writes the raw numbers. About 9 minutes with the defaults.

    .venv/bin/python bench/autoscaling/run.py --json bench/results/autoscaling.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.build import ensure_all
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.operatorproc import OperatorProcess
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.crdgen import build_crd

MODEL = "bench-model"
# ~220 ms per request (100 ms TTFT + 6 tokens of 20 ms), 4 batch slots per
# worker and the router limited to 4 in flight per worker: one worker
# serves about 18 req/s.
SIMULATOR = {"ttftMs": 100, "tpotMs": 20, "maxNumSeqs": 4}
BASE_RATE = 12.0  # req/s: one worker, a third busy
STEP = 4.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# routing.queueSize; None: the operator's default (1024 with autoscaling, 256 without).
QUEUE: dict[str, int | None] = {"size": None}


def service(name: str, replicas: int, autoscaling: dict[str, Any] | None, load_s: float = 0.0
            ) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": MODEL, "source": "simulated/bench"},
        "replicas": replicas,
        "routing": {"routerReplicas": 1, "maxConcurrencyPerWorker": 4, "queueTimeoutSeconds": 60,
                    **({} if QUEUE["size"] is None else {"queueSize": QUEUE["size"]})},
        "worker": {
            "engine": "simulated",
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "simulator": {**SIMULATOR, "loadSeconds": load_s},
            "drainSeconds": 5,
        },
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name}, "spec": spec}


@dataclass
class Sample:
    sent: float  # seconds since the scenario started
    latency: float
    status: int


@dataclass
class Timeline:
    """Polled every 0.25 s: (t, spec.replicas, ready, queue length)."""

    points: list[tuple[float, int, int, int]] = field(default_factory=list)


class Bench:
    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def path(self, name: str) -> str:
        return f"/apis/{c.API_VERSION}/namespaces/{self.namespace}/{c.PLURAL}/{name}"

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.kube.get(self.path(name))
        return result

    def apply(self, body: dict[str, Any]) -> None:
        self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=yaml.safe_dump(body))

    def delete(self, name: str) -> None:
        self.kube.kubectl("delete", "-n", self.namespace, "infsvc", name, "--wait=true")
        wait_for(lambda: self.workers(name) == [], 60, what="pods gone")

    def workers(self, name: str) -> list[dict[str, Any]]:
        selector = f"{c.LABEL_SERVICE}={name},{c.LABEL_COMPONENT}={c.COMPONENT_WORKER}"
        items: list[dict[str, Any]] = self.kube.get(
            f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}")["items"]
        return items

    def ready(self, name: str, replicas: int) -> None:
        wait_for(lambda: (self.get(name).get("status") or {}).get("readyReplicas") == replicas,
                 120, interval=0.5, what=f"{name}: {replicas} ready")

    def router(self, name: str) -> str:
        selector = f"{c.LABEL_SERVICE}={name},{c.LABEL_COMPONENT}={c.COMPONENT_ROUTER}"

        def ready() -> str | None:
            for pod in self.kube.get(
                    f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}")["items"]:
                conds = (pod.get("status") or {}).get("conditions") or []
                if any(x["type"] == "Ready" and x["status"] == "True" for x in conds):
                    return f"http://{pod['status']['podIP']}:{c.ROUTER_HTTP_PORT}"
            return None

        return str(wait_for(ready, 60, interval=0.5, what="a ready router"))

    def scaling_events(self, name: str) -> list[dict[str, Any]]:
        items = self.kube.get(f"/api/v1/namespaces/{self.namespace}/events")["items"]
        return [e for e in items if e.get("reason") in ("ScaledUp", "ScaledDown")
                and e["involvedObject"]["name"] == name]


async def one(session: aiohttp.ClientSession, base: str, t0: float, out: list[Sample]) -> None:
    sent = time.monotonic()
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 6}
    try:
        async with session.post(base + "/v1/completions", json=body) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    out.append(Sample(sent - t0, time.monotonic() - sent, status))


async def open_loop(base: str, rate_at: Any, seconds: float, t0: float) -> list[Sample]:
    """Requests at rate_at(t) per second for `seconds`, each on its own task."""
    out: list[Sample] = []
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        next_at = start
        while (now := time.monotonic()) - start < seconds:
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            tasks.append(asyncio.create_task(one(session, base, t0, out)))
            next_at += 1.0 / rate_at(now - start)
        await asyncio.gather(*tasks)
    return out


async def poll(bench: Bench, name: str, base: str, t0: float, stop: asyncio.Event,
               timeline: Timeline) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            obj = await asyncio.to_thread(bench.get, name)
            try:
                async with session.get(base + "/debug/backends") as resp:
                    queue = (await resp.json())["queue"]["length"]
            except aiohttp.ClientError:
                queue = -1
            status = obj.get("status") or {}
            timeline.points.append((time.monotonic() - t0, obj["spec"]["replicas"],
                                    status.get("readyReplicas", 0), queue))
            await asyncio.sleep(0.25)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def step(bench: Bench, name: str, autoscale: bool, before: float, during: float,
               after: float) -> dict[str, Any]:
    auto = {"minReplicas": 1, "maxReplicas": 6, "targetInFlightPerReplica": 4,
            "scaleDownStabilizationSeconds": 30} if autoscale else None
    bench.apply(service(name, 1, auto))
    bench.ready(name, 1)
    base = bench.router(name)
    t0 = time.monotonic()
    step_at = before

    def rate(t: float) -> float:
        return BASE_RATE * (STEP if before <= t < before + during else 1.0)

    stop, timeline = asyncio.Event(), Timeline()
    poller = asyncio.create_task(poll(bench, name, base, t0, stop, timeline))
    samples = await open_loop(base, rate, before + during + after, t0)
    stop.set()
    await poller
    spike = [s for s in samples if step_at <= s.sent < step_at + during]
    decided = next((t for t, r, _, _ in timeline.points if t >= step_at and r > 1), None)
    top = max(r for _, r, _, _ in timeline.points)
    ready = next((t for t, r, rd, _ in timeline.points if t >= step_at and rd >= top and top > 1),
                 None)
    backlog = [t for t, _, _, q in timeline.points if t >= step_at and q > 0]
    drained = next((t for t, _, _, q in timeline.points
                    if backlog and t > backlog[0] and q == 0 and t < step_at + during), None)
    result = {
        "autoscaling": autoscale,
        "requests": len(samples),
        "failed": sum(1 for s in samples if s.status != 200),
        "failedByStatus": _by_status(samples),
        "spikeRequests": len(spike),
        "spikeP50Ms": _ms(pct([s.latency for s in spike], 0.5)),
        "spikeP99Ms": _ms(pct([s.latency for s in spike], 0.99)),
        "decisionAfterS": _round(decided - step_at if decided is not None else None),
        "podsReadyAfterS": _round(ready - step_at if ready is not None else None),
        "queueDrainedAfterS": _round(drained - step_at if drained is not None else None),
        "maxQueue": max(q for _, _, _, q in timeline.points),
        "maxReplicas": top,
        "events": [e["message"] for e in bench.scaling_events(name)],
    }
    bench.delete(name)
    return result


async def wave(bench: Bench, name: str, seconds: float) -> dict[str, Any]:
    auto = {"minReplicas": 1, "maxReplicas": 6, "targetInFlightPerReplica": 4}
    bench.apply(service(name, 1, auto))
    bench.ready(name, 1)
    base = bench.router(name)
    t0 = time.monotonic()

    def rate(t: float) -> float:
        return BASE_RATE * (STEP if int(t / 30) % 2 == 1 else 1.0)

    stop, timeline = asyncio.Event(), Timeline()
    poller = asyncio.create_task(poll(bench, name, base, t0, stop, timeline))
    samples = await open_loop(base, rate, seconds, t0)
    stop.set()
    await poller
    events = bench.scaling_events(name)
    changes = sum(1 for a, b in zip(timeline.points, timeline.points[1:], strict=False)
                  if a[1] != b[1])
    result = {
        "seconds": seconds,
        "periods": int(seconds / 60),
        "requests": len(samples),
        "failed": sum(1 for s in samples if s.status != 200),
        "failedByStatus": _by_status(samples),
        "replicaChanges": changes,
        "scaledUp": sum(1 for e in events if e["reason"] == "ScaledUp"),
        "scaledDown": sum(1 for e in events if e["reason"] == "ScaledDown"),
        "replicasSeen": sorted({r for _, r, _, _ in timeline.points}),
        "p99Ms": _ms(pct([s.latency for s in samples], 0.99)),
    }
    bench.delete(name)
    return result


async def zero(bench: Bench, name: str, rounds: int, load_s: float) -> dict[str, Any]:
    auto = {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": 10,
            "scaleDownStabilizationSeconds": 5, "intervalSeconds": 1}
    bench.apply(service(name, 1, auto, load_s=load_s))
    bench.ready(name, 1)
    base = bench.router(name)
    latencies, statuses, to_zero = [], [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for _ in range(rounds):
            idle_from = time.monotonic()
            def scaled_to_zero() -> bool:
                return bench.workers(name) == [] and bench.get(name)["spec"]["replicas"] == 0

            await asyncio.to_thread(
                lambda: wait_for(scaled_to_zero, 120, interval=0.5, what="scale to zero"))
            to_zero.append(time.monotonic() - idle_from)
            samples: list[Sample] = []
            await one(session, base, time.monotonic(), samples)
            latencies.append(samples[0].latency)
            statuses.append(samples[0].status)
    result = {
        "rounds": rounds,
        "modelLoadSeconds": load_s,
        "toZeroS": [_round(t) for t in to_zero],
        "firstRequestS": [_round(t) for t in latencies],
        "statuses": statuses,
        "failed": sum(1 for s in statuses if s != 200),
        "events": [e["message"] for e in bench.scaling_events(name)],
    }
    bench.delete(name)
    return result


def _by_status(samples: list[Sample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        if s.status != 200:
            out[str(s.status)] = out.get(str(s.status), 0) + 1
    return out


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


async def scenarios(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    wanted = args.scenarios.split(",")
    if "step" in wanted:
        log("step: 4x traffic step, autoscaling on")
        results["step"] = await step(bench, "step-on", True, 20, args.step_seconds, 10)
        log(json.dumps(results["step"]))
    if "step-off" in wanted:
        log("step-off: the same step at 1 replica, autoscaling off")
        results["stepOff"] = await step(bench, "step-off", False, 20, args.step_seconds, 10)
        log(json.dumps(results["stepOff"]))
    if "wave" in wanted:
        log(f"wave: 1x/4x every 30 s for {args.wave_seconds:g} s (default windows)")
        results["wave"] = await wave(bench, "wave", args.wave_seconds)
        log(json.dumps(results["wave"]))
    if "zero" in wanted:
        log(f"zero: idle to zero, then one request ({args.zero_rounds} rounds)")
        results["zero"] = await zero(bench, "zero", args.zero_rounds, args.load_seconds)
        log(json.dumps(results["zero"]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="step,step-off,wave,zero")
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--wave-seconds", type=float, default=240)
    parser.add_argument("--zero-rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=5.0,
                        help="simulated model load time in the zero scenario")
    parser.add_argument("--queue-size", type=int, default=None,
                        help="routing.queueSize (requests a router holds while workers are busy); "
                        "default: the operator's (1024 with autoscaling, 256 without)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    QUEUE["size"] = args.queue_size
    root = Path(tempfile.mkdtemp(prefix="kubeinfer-bench-autoscaling-"))
    ensure_all(log)
    state = controlplane.up(root, progress=log)
    operator: OperatorProcess | None = None
    try:
        kube = admin_client(root)
        kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(build_crd()))
        wait_for(lambda: kube.exists(f"/apis/{c.API_VERSION}/{c.PLURAL}"), 30, what="the CRD")
        kube.kubectl("create", "namespace", "bench")
        operator = OperatorProcess(Path(state.kubeconfig), root / "operator.log")
        operator.start()
        results = asyncio.run(scenarios(Bench(kube, "bench"), args))
    finally:
        if operator is not None:
            operator.stop()
        controlplane.down(root, progress=log)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
