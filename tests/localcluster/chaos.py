"""The chaos suite: faults injected under counted load, one typed result each.

Each scenario injects one kind of fault into a running InferenceService
while `traffic.Load` sends real OpenAI-client requests (streaming and not)
through a `ServiceProxy` in front of its router pods, and returns a
`ChaosResult`:

- non-streaming requests failed and streams failed in the scenario's window
  (from the fault until the system is back, every request counted);
- seconds from the (last) fault until the desired state holds again:
  worker pods Ready = spec.replicas, every router pod Ready, the Ready
  condition True, and the rollout finished where one was running;
- duplicate pods: the most worker pods seen at once beyond what the plan
  allows (replicas + maxSurge), or two live pods for one slot (replica
  index and revision), whichever is larger. Target 0.

The e2e test (tests/e2e/test_e2e_chaos.py) asserts on the results and
bench/chaos/ repeats them and prints the table. Faults come from
failures.py and controlplane.py; nothing here is product code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.localcluster.failures import (
    give_back_gpus,
    kill_pod,
    set_node_down,
    take_free_gpus,
)
from kubeinfer.localcluster.operatorproc import (
    apply_isvc,
    condition,
    get_isvc,
    simulated_service,
    wait_condition,
)
from kubeinfer.localcluster.serviceproxy import ServiceProxy
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.traffic import Load
from kubeinfer.localcluster.waiting import async_wait_for
from kubeinfer.operator.api import constants as c
from pydantic import BaseModel, ConfigDict

_POLL = 0.25


class ChaosResult(BaseModel):
    """The figures of one scenario run (what the tests assert and bench prints)."""

    model_config = ConfigDict(frozen=True)

    scenario: str
    requests: int  # completed or failed in the window, both kinds
    nonstreaming_failed: int  # target 0
    streams_failed: int  # broken mid-stream or refused
    seconds_to_desired: float
    duplicate_pods: int  # target 0
    most_worker_pods: int
    allowed_worker_pods: int
    # Router pods the fault took down: requests in flight on a router that
    # dies are lost (at most one per client connection), nothing else is.
    router_pods_lost: int = 0
    # Reasons of Degraded=True seen in the window (InsufficientGPU while
    # GPUs are taken; Forbidden would be a false alarm).
    degraded_reasons: tuple[str, ...] = ()


def markdown_table(results: Iterable[ChaosResult]) -> str:
    lines = [
        "| scenario | requests | non-streaming failed | streams failed "
        "| s to desired state | duplicate pods | router pods lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.requests} | {r.nonstreaming_failed} | {r.streams_failed} "
            f"| {r.seconds_to_desired:.1f} | {r.duplicate_pods} | {r.router_pods_lost} |"
        )
    return "\n".join(lines)


def holding_gpus(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods the scheduler counts: not terminating, not ended."""
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")
    ]


def worker_slot_excess(pods: list[dict[str, Any]], allowed: int) -> int:
    """How far one snapshot of worker pods is from the plan: pods beyond
    ``allowed`` or pods sharing a slot (replica, revision), whichever is more.

    Terminating pods and pods that ended (Failed/Succeeded) hold no GPU in
    the scheduler's books and are not counted."""
    live = holding_gpus(pods)
    slots = Counter(
        (
            p["metadata"]["labels"].get(c.LABEL_REPLICA),
            p["metadata"]["labels"].get(c.LABEL_REVISION),
        )
        for p in live
    )
    shared = sum(n - 1 for n in slots.values())
    return max(len(live) - allowed, shared, 0)


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for cond in (obj.get("status") or {}).get("conditions") or []
    )


@dataclass
class ChaosTarget:
    """One InferenceService under load on the local cluster."""

    kube: KubeClient
    state: ClusterState
    namespace: str
    name: str
    spec: dict[str, Any]  # the body applied last
    load: Load
    most_pods: int = 0
    excess: int = 0
    degraded: set[str] = field(default_factory=set)
    history: list[ChaosResult] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.state.root)

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"{c.LABEL_SERVICE}={self.name},{c.LABEL_COMPONENT}={component}"
        items: list[dict[str, Any]] = self.kube.get(
            f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}"
        )["items"]
        return items

    def live_workers(self) -> list[dict[str, Any]]:
        return [
            p for p in self.pods(c.COMPONENT_WORKER) if not p["metadata"].get("deletionTimestamp")
        ]

    def allowed(self) -> int:
        spec = self.spec["spec"]
        return int(spec["replicas"]) + int(spec["rollout"].get("maxSurge", 1))

    def apply(self, body: dict[str, Any]) -> None:
        self.spec = body
        apply_isvc(self.kube, self.namespace, body)

    def at_desired_state(self) -> bool:
        return not self.off_desired_state()

    def off_desired_state(self) -> str:
        """Why the service is not at its desired state ("" when it is): worker
        pods Ready = spec, every router Ready, Ready=True, no rollout running."""
        spec = self.spec["spec"]
        isvc = get_isvc(self.kube, self.namespace, self.name)
        status = isvc.get("status") or {}
        if status.get("observedGeneration") != isvc["metadata"]["generation"]:
            return f"generation {isvc['metadata']['generation']} not observed"
        phase = (status.get("rollout") or {}).get("phase", "Idle")
        if phase not in ("Idle", "Failed"):
            return f"rollout {phase}"
        ready = condition(isvc, "Ready")
        if ready.get("status") != "True":
            return f"Ready={ready.get('status')}: {ready.get('message')}"
        # A pod on a lost node may still read Ready: nobody reports for it.
        up = {n["metadata"]["name"] for n in self.kube.get("/api/v1/nodes")["items"] if _ready(n)}

        def serving(pod: dict[str, Any]) -> bool:
            return _ready(pod) and pod["spec"].get("nodeName") in up

        workers = self.live_workers()
        if len(workers) != spec["replicas"] or not all(map(serving, workers)):
            return f"{sum(map(serving, workers))}/{len(workers)} workers ready on Ready nodes"
        routers = [p for p in self.pods(c.COMPONENT_ROUTER) if serving(p)]
        if len(routers) != spec["routing"]["routerReplicas"]:
            return f"{len(routers)} routers ready on Ready nodes"
        return ""

    async def watch_pods(self) -> None:
        """Record the most worker pods, the worst excess and the Degraded
        reasons seen (runs as a task)."""
        while True:
            try:
                pods = await asyncio.to_thread(self.pods, c.COMPONENT_WORKER)
                isvc = await asyncio.to_thread(get_isvc, self.kube, self.namespace, self.name)
            except (KubeError, OSError):
                pass  # the API server is away: nothing to see
            else:
                self.most_pods = max(self.most_pods, len(holding_gpus(pods)))
                self.excess = max(self.excess, worker_slot_excess(pods, self.allowed()))
                degraded = condition(isvc, "Degraded")
                if degraded.get("status") == "True":
                    self.degraded.add(str(degraded.get("reason")))
            await asyncio.sleep(_POLL)

    async def until(self, check: Callable[[], Any], within: float, what: str) -> Any:
        async def probe() -> Any:
            try:
                return await asyncio.to_thread(check)
            except (KubeError, OSError):
                return None

        return await async_wait_for(probe, within, interval=_POLL, what=what)

    async def measure(
        self,
        scenario: str,
        fault: Callable[[], Awaitable[float]],
        recovered: Callable[[], bool] | None = None,
        within: float = 120,
        routers_lost: Callable[[], int] = lambda: 0,
    ) -> ChaosResult:
        """Run fault (it returns the monotonic time of its last injection),
        then wait for the desired state (and ``recovered``) and count."""
        await self.until(self.at_desired_state, 120, f"{self.name} at its desired state before")
        before = self.load.snapshot()
        self.most_pods, self.excess, self.degraded = 0, 0, set()
        watcher = asyncio.create_task(self.watch_pods())
        try:
            last_fault = await fault()

            def back() -> bool | str:
                if recovered is not None and not recovered():
                    return False
                off = self.off_desired_state()
                # A non-empty reason is falsy for the wait, but shown on timeout.
                return True if not off else _Reason(off)

            await self.until(back, within, f"{self.name} back at its desired state ({scenario})")
            seconds = time.monotonic() - last_fault
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        after = self.load.snapshot()
        failed = after["failed"] - before["failed"]
        streams = after["failed-stream"] - before["failed-stream"]
        result = ChaosResult(
            scenario=scenario,
            requests=sum(after[k] - before[k] for k in ("ok", "stream-ok", "failed")),
            nonstreaming_failed=failed - streams,
            streams_failed=streams,
            seconds_to_desired=round(seconds, 1),
            duplicate_pods=self.excess,
            most_worker_pods=self.most_pods,
            allowed_worker_pods=self.allowed(),
            router_pods_lost=routers_lost(),
            degraded_reasons=tuple(sorted(self.degraded)),
        )
        self.history.append(result)
        return result


class _Reason(str):
    """A reason the wait keeps polling for: falsy, but shown when it times out."""

    def __bool__(self) -> bool:
        return False


def _with_spec(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec = dict(body["spec"])
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return {**body, "spec": spec}


def _next_revision(body: dict[str, Any]) -> dict[str, Any]:
    """The same service with a new revision (the simulator a little faster or slower)."""
    worker = body["spec"]["worker"]
    simulator = {**worker["simulator"], "tpotMs": round(worker["simulator"]["tpotMs"] + 0.1, 2)}
    return _with_spec(body, worker={**worker, "simulator": simulator})


def _ready_worker(target: ChaosTarget) -> dict[str, Any]:
    return next(p for p in target.live_workers() if _ready(p))


def chaos_service(
    name: str, replicas: int = 2, routing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A simulated service with two router pods, quick to roll out and to
    load; ``routing`` fields are added to its routing section."""
    return simulated_service(
        name,
        replicas,
        routing={"routerReplicas": 2, "retries": 3, **(routing or {})},
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
    """Apply body, wait until Ready, and yield it under load through a
    ServiceProxy in front of its router pods (4 clients, every 3rd request
    streams)."""
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


# The scenarios. Each leaves the service at its desired state.


async def worker_killed_repeatedly(
    target: ChaosTarget, every: float = 10, during: float = 60
) -> ChaosResult:
    """SIGKILL a Ready worker pod's process every ``every`` s for ``during`` s,
    the one killed least so far each time (so that the kills go round)."""
    kills: Counter[str] = Counter()

    def victim() -> str:
        ready = [str(p["metadata"]["name"]) for p in target.live_workers() if _ready(p)]
        if not ready:
            raise LookupError("no Ready worker to kill")
        return min(ready, key=lambda name: (kills[name], name))

    async def fault() -> float:
        started = time.monotonic()
        last = started
        for tick in range(int(during // every)):
            # The schedule is the scenario: a kill at every tick.
            await asyncio.sleep(max(0.0, started + tick * every - time.monotonic()))
            name = await asyncio.to_thread(victim)
            kills[name] += 1
            await asyncio.to_thread(kill_pod, target.root, target.namespace, name)
            last = time.monotonic()
        return last

    spec = target.spec["spec"]
    hold = spec["routing"].get("holdTimeoutSeconds")
    held = f", routers hold {hold} s" if hold else ""
    return await target.measure(
        f"worker killed every {every:g} s for {during:g} s ({spec['replicas']} workers{held})",
        fault,
    )


async def router_pod_killed(target: ChaosTarget) -> ChaosResult:
    """SIGKILL one of the router pods (a crash: requests in flight on it are lost)."""
    victim = (await asyncio.to_thread(target.pods, c.COMPONENT_ROUTER))[0]["metadata"]["name"]

    async def fault() -> float:
        await asyncio.to_thread(kill_pod, target.root, target.namespace, victim)
        return time.monotonic()

    return await target.measure("one of two router pods killed", fault, routers_lost=lambda: 1)


async def control_plane_restarted_mid_rollout(
    target: ChaosTarget, components: tuple[str, ...] = ("kube-apiserver",)
) -> ChaosResult:
    """Start a rollout, restart each of ``components`` (etcd, kube-apiserver)
    in turn once the canary pod exists, and wait for the rollout to finish."""
    stable = get_isvc(target.kube, target.namespace, target.name)["status"]["stableRevision"]
    body = _next_revision(target.spec)

    def canary_started() -> bool:
        return any(
            p["metadata"]["labels"].get(c.LABEL_REVISION) != stable for p in target.live_workers()
        )

    def promoted() -> bool:
        status = get_isvc(target.kube, target.namespace, target.name)["status"]
        return bool(status["stableRevision"] != stable)

    async def fault() -> float:
        await asyncio.to_thread(target.apply, body)
        await target.until(canary_started, 60, "the canary pod")
        for component in components:
            await asyncio.to_thread(
                controlplane.stop_component, target.state, component, grace_seconds=3
            )
            # Spawned from the event loop's (main) thread: it dies with this process.
            controlplane.start_component(target.state, component)
            await asyncio.to_thread(controlplane.wait_api_ready, target.state)
        return time.monotonic()

    scenario = f"{' then '.join(components)} restarted mid-rollout"
    return await target.measure(scenario, fault, promoted)


def _routers_on(target: ChaosTarget, node: str) -> int:
    return sum(p["spec"].get("nodeName") == node for p in target.pods(c.COMPONENT_ROUTER))


async def node_not_ready(target: ChaosTarget, with_router: bool | None = None) -> ChaosResult:
    """Take the node of a Ready worker away (NotReady, its processes killed).

    ``with_router``: True picks a node that also runs a router pod, False one
    that runs none, None prefers one without (and takes any when none is).
    Raises LookupError when no node fits."""

    def pick() -> tuple[dict[str, Any], int]:
        candidates = [
            (p, _routers_on(target, p["spec"]["nodeName"])) for p in target.live_workers()
        ]
        candidates = [(p, n) for p, n in candidates if _ready(p)]
        fits = [(p, n) for p, n in candidates if with_router is None or (n > 0) == with_router]
        fits.sort(key=lambda pair: pair[1])
        if not fits:
            raise LookupError(f"no worker node with_router={with_router}")
        return fits[0]

    victim, routers = await asyncio.to_thread(pick)
    node = victim["spec"]["nodeName"]

    def replaced() -> bool:
        names = {p["metadata"]["name"] for p in target.live_workers()}
        return victim["metadata"]["name"] not in names

    async def fault() -> float:
        await asyncio.to_thread(set_node_down, target.root, node, True)
        return time.monotonic()

    scenario = "GPU node NotReady" + (" (a router pod on it)" if routers else "")
    try:
        return await target.measure(scenario, fault, replaced, routers_lost=lambda: routers)
    finally:
        await _node_back(target, node)


async def node_lost_while_loading(target: ChaosTarget) -> ChaosResult:
    """Scale up by one; take the new pod's node away while its model loads."""
    before = {p["metadata"]["name"] for p in await asyncio.to_thread(target.live_workers)}
    body = _with_spec(target.spec, replicas=target.spec["spec"]["replicas"] + 1)
    lost: dict[str, str] = {}
    routers: list[int] = []

    def loading_pod() -> dict[str, Any] | None:
        for pod in target.live_workers():
            running = (pod.get("status") or {}).get("phase") == "Running"
            if pod["metadata"]["name"] not in before and running and not _ready(pod):
                return pod
        return None

    def replaced() -> bool:
        return lost["pod"] not in {p["metadata"]["name"] for p in target.live_workers()}

    async def fault() -> float:
        await asyncio.to_thread(target.apply, body)
        pod = await target.until(loading_pod, 60, "a new worker pod loading its model")
        lost.update(pod=pod["metadata"]["name"], node=pod["spec"]["nodeName"])
        routers.append(await asyncio.to_thread(_routers_on, target, lost["node"]))
        await asyncio.to_thread(set_node_down, target.root, lost["node"], True)
        return time.monotonic()

    try:
        return await target.measure(
            "node lost while a pod loads", fault, replaced, routers_lost=lambda: sum(routers)
        )
    finally:
        if lost:
            await _node_back(target, lost["node"])


async def all_gpus_taken(target: ChaosTarget) -> ChaosResult:
    """Other pods take every free GPU; scaling up then waits (Degraded:
    InsufficientGPU) and completes once the GPUs are given back."""
    body = _with_spec(target.spec, replicas=target.spec["spec"]["replicas"] + 1)

    def insufficient() -> dict[str, Any] | None:
        cond = condition(get_isvc(target.kube, target.namespace, target.name), "Degraded")
        seen = cond.get("status") == "True" and cond.get("reason") == "InsufficientGPU"
        return cond if seen else None

    async def fault() -> float:
        await asyncio.to_thread(take_free_gpus, target.kube, target.namespace)
        await asyncio.to_thread(target.apply, body)
        # Fails after 60 s unless the service says so. Recorded here: the GPUs
        # come back at once, so the condition can clear before `watch_pods`'
        # next poll.
        await target.until(insufficient, 60, "Degraded: InsufficientGPU")
        target.degraded.add("InsufficientGPU")
        await asyncio.to_thread(give_back_gpus, target.kube, target.namespace)
        return time.monotonic()

    try:
        return await target.measure("all GPUs taken, then given back", fault)
    finally:
        await asyncio.to_thread(give_back_gpus, target.kube, target.namespace)


async def scale_to(target: ChaosTarget, replicas: int) -> None:
    """Set spec.replicas (between scenarios) and wait for the desired state."""
    await asyncio.to_thread(target.apply, _with_spec(target.spec, replicas=replicas))
    await target.until(target.at_desired_state, 90, f"{replicas} replicas")


async def _node_back(target: ChaosTarget, node: str) -> None:
    await asyncio.to_thread(set_node_down, target.root, node, False)

    def back() -> bool:
        return _ready(target.kube.get(f"/api/v1/nodes/{node}"))

    await target.until(back, 60, f"{node} Ready again")
