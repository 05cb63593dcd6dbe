"""The measurements: apply → pods, pod failure → replacement, and 100 x 8 at scale."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from apiclient import Api
from apimetrics import (
    RequestStats,
    parse_reconciles,
    parse_request_stats,
    queue_delta,
    reconcile_delta,
    request_delta,
)
from kubeinfer.operator.api import constants as c
from observer import Observer, PodRecord
from procstat import Sample, Sampler, cpu_percent, cpu_seconds

# Any image outside ghcr.io/kubeinfer/* is left to KWOK, which marks the pod
# Running and Ready at once (tests/localcluster/kwok_stages.py): no process
# is started, so hundreds of pods cost the machine nothing but API traffic.
WORKER_IMAGE = "registry.example/bench-worker:1"
FAILURE_KINDS = ("gpu-fault", "evicted", "delete")
GPU_FAULT_MESSAGE = "GPU lost: Xid 79 (GPU has fallen off the bus)"


def isvc_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL}"
    return f"{path}/{name}" if name else path


def build_isvc(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A simulated-engine service on KWOK pods, without routers: the cost
    measured is the operator's, not that of hundreds of real processes."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "bench-model", "source": "simulated/bench-1b"},
            "replicas": replicas,
            "routing": {"routerReplicas": 0},
            "worker": {
                "engine": "simulated",
                "image": WORKER_IMAGE,
                "resources": {"cpu": "100m", "memory": "256Mi"},
            },
        },
    }


def _report_watch_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"[bench] a watch stopped: {task.exception()!r}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def watching(api: Api, namespace: str) -> AsyncIterator[Observer]:
    """An Observer fed by watches on the worker pods and InferenceServices of namespace."""
    observer = Observer()
    started = [asyncio.Event(), asyncio.Event()]
    pods = f"/api/v1/namespaces/{namespace}/pods"
    tasks = [
        asyncio.create_task(api.watch(pods, observer.on_pod, started[0])),
        asyncio.create_task(api.watch(isvc_path(namespace), observer.on_service, started[1])),
    ]
    for task in tasks:
        task.add_done_callback(_report_watch_end)
    try:
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), timeout=30)
        yield observer
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _nth_time(times: list[float], n: int) -> float:
    return sorted(times)[n - 1]


# --- apply → pods -------------------------------------------------------------


@dataclass
class ApplyResult:
    first_pod_s: float  # apply sent → first worker pod seen
    all_created_s: float  # apply sent → the last of the replicas seen
    all_ready_s: float  # apply sent → every replica Ready (KWOK)
    service_ready_s: float  # apply sent → condition Ready=True on the InferenceService


async def apply_and_wait(
    api: Api, observer: Observer, namespace: str, name: str, replicas: int, limit_s: float
) -> ApplyResult:
    started = time.monotonic()
    await api.create(isvc_path(namespace), build_isvc(namespace, name, replicas))

    def pods() -> list[PodRecord]:
        return [p for p in observer.pods.values() if p.service == name]

    await observer.wait(lambda: len(pods()) >= replicas, limit_s, f"{replicas} pods of {name}")
    created = [p.seen_at for p in pods()]
    await observer.wait(
        lambda: sum(p.ready_at is not None for p in pods()) >= replicas,
        limit_s,
        f"{replicas} ready pods of {name}",
    )
    ready = [p.ready_at for p in pods() if p.ready_at is not None]
    await observer.wait(
        lambda: name in observer.service_ready_at, limit_s, f"{name} condition Ready"
    )
    return ApplyResult(
        first_pod_s=min(created) - started,
        all_created_s=_nth_time(created, replicas) - started,
        all_ready_s=_nth_time(ready, replicas) - started,
        service_ready_s=observer.service_ready_at[name] - started,
    )


# --- failure → replacement ------------------------------------------------------


@dataclass
class FailureResult:
    kind: str
    victim: str
    replacement: str
    written_to_seen_s: float  # our failure write answered → we saw the failure event
    seen_to_created_s: float  # failure seen → replacement pod seen (the target's figure)
    written_to_created_s: float
    created_to_ready_s: float
    old_gone_s: float  # failure seen → the failed pod deleted


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure_status(kind: str) -> dict[str, Any]:
    """The pod status a kubelet reports for the failure (a status patch)."""
    now = _now_iso()
    if kind == "evicted":
        # Node-pressure eviction: the kubelet fails the pod.
        return {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}
    # The worker exits with the GPU's reason in its termination message;
    # with restartPolicy Always the pod stays Running, the container terminated.
    terminated = {
        "exitCode": 3,
        "reason": "Error",
        "message": GPU_FAULT_MESSAGE,
        "startedAt": now,
        "finishedAt": now,
    }
    conditions = [
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
         "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
         "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]  # fmt: skip
    return {
        "conditions": conditions,
        "containerStatuses": [
            {
                "name": "worker",
                "image": WORKER_IMAGE,
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }


async def inject_failure(api: Api, namespace: str, pod: str, kind: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    if kind == "delete":
        # A force delete (kubectl delete --grace-period=0 --force, or the pod
        # garbage collector after a node is lost): the pod is simply gone.
        await api.delete(path, {"apiVersion": "v1", "kind": "DeleteOptions",
                                "gracePeriodSeconds": 0})  # fmt: skip
    else:
        await api.merge_patch(path + "/status", {"status": failure_status(kind)})


# Longer than the operator's requeue while it is busy (plan.BUSY_REQUEUE_SECONDS):
# a failure then meets an idle operator, not one that happens to be about
# to look anyway.
QUIET_SECONDS = 1.5


async def settle(observer: Observer, service: str, replicas: int, limit_s: float) -> None:
    """Wait until the service is at full strength and the operator's status
    has caught up, then a quiet moment: each failure is news to the operator."""
    await observer.wait(
        lambda: observer.caught_up(service, replicas),
        limit_s,
        f"{service}: {replicas} ready pods, and its status saying so",
    )
    await asyncio.sleep(QUIET_SECONDS)


def pick_victim(observer: Observer, service: str, used: set[str]) -> PodRecord:
    """A ready pod with no failure behind it (a replacement of a replacement
    would wait out the operator's backoff, which is not what is measured)."""
    for pod in sorted(observer.live(service), key=lambda p: p.name):
        if pod.ready and pod.failures == 0 and pod.failed_at is None and pod.uid not in used:
            return pod
    raise RuntimeError(f"no healthy pod of {service} left to fail")


async def fail_and_wait(
    api: Api,
    observer: Observer,
    namespace: str,
    service: str,
    kind: str,
    replicas: int,
    used: set[str],
    limit_s: float,
) -> FailureResult:
    await settle(observer, service, replicas, limit_s)
    victim = pick_victim(observer, service, used)
    used.add(victim.uid)
    before = {p.uid for p in observer.pods.values() if p.service == service}
    await inject_failure(api, namespace, victim.name, kind)
    written = time.monotonic()

    def replacement() -> PodRecord | None:
        fresh = [p for p in observer.pods.values() if p.service == service and p.uid not in before]
        return min(fresh, key=lambda p: p.seen_at) if fresh else None

    new: PodRecord = await observer.wait(replacement, limit_s, f"a replacement for {victim.name}")
    await observer.wait(lambda: new.ready_at is not None, limit_s, f"{new.name} Ready")
    await observer.wait(lambda: victim.gone_at is not None, limit_s, f"{victim.name} deleted")
    seen = victim.failed_at if kind != "delete" else victim.gone_at
    assert seen is not None
    assert victim.gone_at is not None
    assert new.ready_at is not None
    return FailureResult(
        kind=kind,
        victim=victim.name,
        replacement=new.name,
        written_to_seen_s=seen - written,
        seen_to_created_s=new.seen_at - seen,
        written_to_created_s=new.seen_at - written,
        created_to_ready_s=new.ready_at - new.seen_at,
        old_gone_s=victim.gone_at - seen,
    )


async def delete_service(
    api: Api, observer: Observer, namespace: str, name: str, limit_s: float
) -> None:
    await api.delete(isvc_path(namespace, name))
    await observer.wait(
        lambda: not any(p.service == name for p in observer.live()),
        limit_s,
        f"the pods of {name} to be deleted",
    )


# --- 100 x 8 on one core -------------------------------------------------------


APPLY_CONCURRENCY = 8


@dataclass
class Span:
    wall_s: float
    cpu_s: float

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Span:
        return cls(wall_s=b.at - a.at, cpu_s=b.cpu_seconds - a.cpu_seconds)


async def _metrics(api: Api) -> RequestStats:
    return parse_request_stats(await api.request("GET", "/metrics"))


async def scale_run(
    api: Api,
    observer: Observer,
    sampler: Sampler,
    operator_metrics: Callable[[], Awaitable[str]],
    components: dict[str, int],
    namespace: str,
    *,
    services: int,
    replicas: int,
    steady_seconds: float,
    settle_seconds: float,
    failures: int,
    limit_s: float,
    phase: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Apply ``services`` InferenceServices at once and measure the ramp, the
    steady state after it, and failures at that scale. ``phase`` is told
    when the "ramp" and the "steady" phase start and when all is "done"."""
    total = services * replicas
    names = [f"svc-{i:03d}" for i in range(services)]
    phase("ramp")
    idle = sampler.now()
    components_idle = cpu_seconds(components)
    calls_before = await _metrics(api)
    reconciles_before = parse_reconciles(await operator_metrics())
    started = time.monotonic()
    # All at once, as `kubectl apply -f` of a folder or a GitOps sync would
    # (a few in flight, so the applies are not what takes the time).
    in_flight = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def create(name: str) -> None:
        async with in_flight:
            await api.create(isvc_path(namespace), build_isvc(namespace, name, replicas))

    await asyncio.gather(*(create(name) for name in names))
    applied = time.monotonic()

    def count(attr: str) -> int:
        return sum(getattr(p, attr) is not None for p in observer.pods.values())

    await observer.wait(lambda: count("seen_at") >= total, limit_s, f"{total} pods created")
    at_created = sampler.now()
    created = [p.seen_at for p in observer.pods.values()]
    created_s = _nth_time(created, total) - started
    quantiles = {
        f"{q}%": _nth_time(created, max(1, total * q // 100)) - started for q in (1, 10, 50, 90)
    }
    await observer.wait(lambda: count("ready_at") >= total, limit_s, f"{total} pods Ready")
    ready_s = _nth_time([p.ready_at for p in observer.pods.values() if p.ready_at], total) - started
    await observer.wait(
        lambda: len(observer.service_ready_at) >= services,
        limit_s,
        f"{services} InferenceServices Ready",
    )
    at_services_ready = sampler.now()
    phase("done")
    components_ready = cpu_seconds(components)
    services_ready_s = max(observer.service_ready_at.values()) - started
    calls_after_ramp = await _metrics(api)
    calls_ramp = request_delta(calls_after_ramp, calls_before)
    queued_ramp = queue_delta(calls_after_ramp, calls_before)
    reconciles_ramp = parse_reconciles(await operator_metrics())
    extra_pods = len(observer.pods) - total

    await asyncio.sleep(settle_seconds)
    phase("steady")
    steady_start = sampler.now()
    components_steady = cpu_seconds(components)
    calls_steady_before = await _metrics(api)
    reconciles_steady_before = parse_reconciles(await operator_metrics())
    await asyncio.sleep(steady_seconds)
    steady_end = sampler.now()
    phase("done")
    components_end = cpu_seconds(components)
    calls_steady = request_delta(await _metrics(api), calls_steady_before)
    reconciles_steady = reconcile_delta(
        parse_reconciles(await operator_metrics()), reconciles_steady_before
    )

    trials = []
    for i in range(failures):
        service = names[(i * max(1, services // max(1, failures))) % services]
        trials.append(
            await fail_and_wait(
                api, observer, namespace, service, "gpu-fault", replicas, set(), limit_s=60
            )
        )
    return {
        "services": services,
        "replicas": replicas,
        "apply_loop_s": applied - started,
        "all_created_s": created_s,
        "created_quantiles_s": quantiles,
        "all_ready_s": ready_s,
        "all_services_ready_s": services_ready_s,
        "extra_pods_created": extra_pods,
        "ramp_to_created": asdict(Span.between(idle, at_created))
        | {"cpu_percent": Span.between(idle, at_created).cpu_percent},
        "ramp_to_services_ready": asdict(Span.between(idle, at_services_ready))
        | {"cpu_percent": Span.between(idle, at_services_ready).cpu_percent},
        "steady": asdict(Span.between(steady_start, steady_end))
        | {"cpu_percent": Span.between(steady_start, steady_end).cpu_percent},
        "components_cpu_percent_ramp": cpu_percent(
            components_ready, components_idle, at_services_ready.at - idle.at
        ),
        "components_cpu_percent_steady": cpu_percent(
            components_end, components_steady, steady_end.at - steady_start.at
        ),
        "rss_idle_mib": idle.rss_mib,
        "rss_steady_mib": steady_end.rss_mib,
        "rss_peak_mib": sampler.peak_rss_mib(),
        "reconciles_ramp": reconcile_delta(reconciles_ramp, reconciles_before),
        "reconciles_steady": reconciles_steady,
        "api_calls_ramp": calls_ramp,
        "api_queued_ramp": queued_ramp,
        "api_calls_steady": calls_steady,
        "failures_at_scale": [asdict(t) for t in trials],
    }
