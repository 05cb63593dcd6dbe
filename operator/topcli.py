"""`kubectl kubeinfer top [NAME]`: a live view per worker (GPU), from the routers.

Each router's ``/debug/backends`` is read through the API server's pod
proxy (``pods/<router>:8080/proxy/debug/backends``), so it works wherever
kubectl works, with ``get pods/proxy`` as the only permission beyond
reads. The API server refuses to proxy to loopback pod IPs, which is what
the local control plane gives its pods; there the router is read at its
pod IP directly (reachable from that machine). Every router serves part
of the traffic: counts add up, in-flight adds up, percentiles take the
worst router. Refreshed every second;
``--once`` prints one table for scripts.
"""

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.debugbackends import DebugBackends, worst
from kubeinfer.operator.api.status import InferenceServiceStatus
from kubeinfer.operator.clicommon import (
    CommandError,
    connect,
    dump,
    global_flags,
    namespace_of,
    option,
    output_of,
    run_command,
    table,
)
from kubeinfer.operator.kube import ApiError, KubeClient
from kubeinfer.operator.observe import observe_pod
from pydantic import ValidationError

# kube-apiserver will not proxy to loopback or link-local pod IPs.
PROXY_REFUSED = "address not allowed"
CLEAR = "\x1b[H\x1b[2J"


@dataclass
class WorkerRow:
    service: str
    pod: str
    revision: str
    weight: int  # percent of traffic to its revision
    healthy: bool
    in_flight: int = 0
    waiting: int | None = None
    requests: int = 0  # in the routers' window
    total: int = 0  # since the routers started (for the live rate)
    rate: float | None = None  # req/s between two refreshes (live view)
    window_seconds: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    gpu_util: int | None = None
    gpu_used_mib: int | None = None
    gpu_total_mib: int | None = None
    oldest_s: float | None = None

    @property
    def rps(self) -> float:
        """Between the last two refreshes in the live view; else over the
        routers' window (60 s, or since the router started)."""
        if self.rate is not None:
            return self.rate
        return self.requests / self.window_seconds if self.window_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inferenceService": self.service,
            "pod": self.pod,
            "revision": self.revision,
            "weight": self.weight,
            "healthy": self.healthy,
            "inFlight": self.in_flight,
            "waiting": self.waiting,
            "requests": self.requests,
            "windowSeconds": self.window_seconds,
            "requestsPerSecond": round(self.rps, 3),
            "p50LatencyMs": self.p50_ms,
            "p99LatencyMs": self.p99_ms,
            "p50TtftMs": self.ttft_p50_ms,
            "gpuUtilizationPercent": self.gpu_util,
            "gpuMemoryUsedMiB": self.gpu_used_mib,
            "gpuMemoryMiB": self.gpu_total_mib,
            "oldestRunningSeconds": self.oldest_s,
        }


def revision_weights(status: InferenceServiceStatus) -> dict[str, int]:
    canary = status.canary_weight if status.canary_revision else 0
    weights = {status.stable_revision or "": 100 - canary}
    if status.canary_revision:
        weights[status.canary_revision] = canary
    return weights


def merge_routers(
    service: str, documents: Sequence[DebugBackends], weights: dict[str, int]
) -> list[WorkerRow]:
    """One row per worker from the ``/debug/backends`` of all routers (pure)."""
    rows: dict[str, WorkerRow] = {}
    for doc in documents:
        for b in doc.backends:
            row = rows.get(b.name)
            healthy = b.healthy and not b.ejected
            if row is None:
                row = rows[b.name] = WorkerRow(
                    service=service,
                    pod=b.name,
                    revision=b.revision,
                    weight=weights.get(b.revision, 0),
                    healthy=healthy,
                )
            else:
                row.healthy = row.healthy and healthy
            window = b.window
            row.in_flight += b.in_flight
            if b.queue_depth is not None:
                row.waiting = max(row.waiting or 0, b.queue_depth)
            row.requests += window.requests
            row.total += b.requests
            row.window_seconds = max(row.window_seconds, window.seconds)
            row.p50_ms = worst(row.p50_ms, window.p50_latency_ms)
            row.p99_ms = worst(row.p99_ms, window.p99_latency_ms)
            row.ttft_p50_ms = worst(row.ttft_p50_ms, window.p50_ttft_ms)
            row.oldest_s = worst(row.oldest_s, b.oldest_running_seconds)
            gpu = b.gpu
            if gpu is not None and row.gpu_total_mib is None:
                row.gpu_util = gpu.utilization_percent
                row.gpu_used_mib = gpu.memory_used_mib
                row.gpu_total_mib = gpu.memory_mib
    return sorted(rows.values(), key=lambda r: (r.service, r.revision, r.pod))


def live_rates(
    rows: list[WorkerRow], before: dict[str, tuple[float, int]], now: float
) -> dict[str, tuple[float, int]]:
    """Set each row's rate from the previous refresh; returns this one's counts."""
    for row in rows:
        seen = before.get(row.pod)
        if seen is not None and now > seen[0] and row.total >= seen[1]:
            row.rate = (row.total - seen[1]) / (now - seen[0])
    return {row.pod: (now, row.total) for row in rows}


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def render_top(rows: list[WorkerRow]) -> str:
    return table(
        [
            "INFERENCESERVICE",
            "WORKER",
            "REVISION",
            "WEIGHT",
            "HEALTHY",
            "IN FLIGHT",
            "WAITING",
            "REQ/S",
            "P50",
            "P99",
            "TTFT P50",
            "GPU",
            "GPU MEMORY",
            "OLDEST",
        ],
        [
            [
                r.service,
                r.pod,
                r.revision,
                f"{r.weight}%",
                r.healthy,
                r.in_flight,
                r.waiting,
                f"{r.rps:.1f}",
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                _ms(r.ttft_p50_ms),
                f"{r.gpu_util}%" if r.gpu_util is not None else None,
                f"{(r.gpu_used_mib or 0) / 1024:.1f}/{r.gpu_total_mib / 1024:.1f}Gi"
                if r.gpu_total_mib
                else None,
                f"{r.oldest_s:.1f}s" if r.oldest_s is not None else None,
            ]
            for r in rows
        ],
    )


def _document(raw: str | bytes, where: str) -> DebugBackends | None:
    try:
        return DebugBackends.model_validate_json(raw)
    except ValidationError as error:  # another router version, mid-upgrade
        print(f"router {where}: unreadable /debug/backends: {error}", file=sys.stderr)
        return None


async def read_direct(ip: str) -> DebugBackends | None:
    """The router at its pod IP: for the local control plane, whose pod IPs
    are loopback addresses that the API server refuses to proxy to."""
    url = f"http://{ip}:{c.ROUTER_HTTP_PORT}/debug/backends"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as answer,
        ):
            if answer.status != 200:
                return None
            return _document(await answer.read(), url)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        print(f"router {url}: {error}", file=sys.stderr)
        return None


async def router_documents(kube: KubeClient, namespace: str, service: str) -> list[DebugBackends]:
    """``/debug/backends`` of every ready router pod, through the API server."""
    selector = f"{c.LABEL_SERVICE}={service},{c.LABEL_COMPONENT}={c.COMPONENT_ROUTER}"
    pods = (
        await kube.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        )
    )["items"]
    routers = [observe_pod(p) for p in pods]

    async def read(pod: str, ip: str | None) -> DebugBackends | None:
        path = (
            f"/api/v1/namespaces/{namespace}/pods/{pod}:{c.ROUTER_HTTP_PORT}/proxy/debug/backends"
        )
        try:
            text = await kube.get_text(path)
        except ApiError as error:
            if error.status == 403:
                raise
            if PROXY_REFUSED in str(error) and ip:
                return await read_direct(ip)
            # One router restarting must not blank the view.
            print(f"router {pod}: {error}", file=sys.stderr)
            return None
        return _document(text, pod)

    answers = await asyncio.gather(*(read(p.name, p.ip) for p in routers if p.ready))
    return [a for a in answers if a is not None]


async def collect(kube: KubeClient, args: argparse.Namespace) -> list[WorkerRow]:
    namespace = namespace_of(args)
    if option(args, "name"):
        objects = [await kube.request("GET", _isvc_path(namespace, args.name))]
    elif option(args, "all_namespaces"):
        objects = (await kube.request("GET", f"/apis/{c.API_VERSION}/{c.PLURAL}"))["items"]
    else:
        objects = (await kube.request("GET", _isvc_path(namespace)))["items"]
    rows: list[WorkerRow] = []
    for obj in objects:
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        status = InferenceServiceStatus.model_validate(obj.get("status") or {})
        documents = await router_documents(kube, namespace, name)
        rows += merge_routers(name, documents, revision_weights(status))
    return rows


def _isvc_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL}"
    return f"{path}/{name}" if name else path


async def _top(args: argparse.Namespace) -> int:
    kube = await connect(args)
    try:
        counts: dict[str, tuple[float, int]] = {}
        while True:
            rows = await collect(kube, args)
            counts = live_rates(rows, counts, time.monotonic())
            if output_of(args) != "table":
                print(dump({"workers": [r.to_dict() for r in rows]}, output_of(args)), end="")
            else:
                text = render_top(rows) if rows else "no workers behind a ready router\n"
                print(text if option(args, "once") else CLEAR + text, end="", flush=True)
            if option(args, "once"):
                return 0
            await asyncio.sleep(args.interval)
    finally:
        await kube.close()


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "top",
        parents=[global_flags()],
        help="live per-worker view from the routers: load, latency, GPU, canary weight",
    )
    parser.add_argument("name", nargs="?", help="one InferenceService (default: all in -n)")
    parser.add_argument("--once", action="store_true", help="print once and exit (for scripts)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")


def run(args: argparse.Namespace) -> int:
    async def work() -> int:
        if args.interval <= 0:
            raise CommandError("--interval must be > 0")
        return await _top(args)

    return run_command(work)
