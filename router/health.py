"""Active health checks, queue-depth scraping and stall detection.

- Every backend is probed at its health URL (the worker agent's ``/ready``
  in a cluster, vLLM's ``/health`` by default): out after
  ``unhealthyThreshold`` failures, back after ``healthyThreshold`` successes.
- Its ``/metrics`` is scraped for ``vllm:num_requests_waiting`` and
  ``vllm:kv_cache_usage_perc`` (load the balancing policies weigh, see
  `policies.load_of`) and ``vllm:generation_tokens_total`` (progress).
- A backend with requests in flight that has sent no byte and generated no
  token for ``stallTimeoutSeconds`` is stalled: vLLM's ``/health`` can stay
  200 while the engine hangs. It is ejected and its attempts are failed, so
  that those not yet answering the client are retried elsewhere.

This module uses aiohttp's client (a few requests per second per backend);
the per-request path uses `upstream`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
from kubeinfer.operator.api import vllm_metrics as names
from kubeinfer.router.pool import BackendState
from kubeinfer.router.upstream import UpstreamError

if TYPE_CHECKING:
    from kubeinfer.router.app import Router

log = logging.getLogger("kubeinfer.router.health")

TICK_SECONDS = 0.1
# What the router keeps of the agent's GET /gpu (see kubeinfer.worker.nvml).
GPU_FIELDS = ("uuid", "name", "memoryTotalBytes", "memoryUsedBytes", "utilizationPercent",
              "healthy", "fault")


class WorkerLoad(NamedTuple):
    """What the router reads from a worker's ``/metrics``."""

    waiting: int | None  # num_requests_waiting, summed over engines
    running: int | None  # num_requests_running, summed over engines
    generation_tokens: float | None  # generation_tokens_total, summed over engines
    kv_usage: float | None  # kv_cache_usage_perc, the fullest engine's


_WAITING = (names.NUM_REQUESTS_WAITING + "{", names.NUM_REQUESTS_WAITING + " ")
_RUNNING = (names.NUM_REQUESTS_RUNNING + "{", names.NUM_REQUESTS_RUNNING + " ")
_TOKENS = (names.GENERATION_TOKENS + "_total{", names.GENERATION_TOKENS + "_total ")
_KV = (names.KV_CACHE_USAGE_PERC + "{", names.KV_CACHE_USAGE_PERC + " ")


def parse_vllm_metrics(text: str) -> WorkerLoad:
    """The load figures of one scrape.

    Only four families are looked at, by line prefix, so a 40 kB scrape
    costs next to nothing.
    """
    waiting: float | None = None
    running: float | None = None
    tokens: float | None = None
    kv: float | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        if line.startswith(_WAITING):
            waiting = _plus(waiting, line)
        elif line.startswith(_RUNNING):
            running = _plus(running, line)
        elif line.startswith(_TOKENS):
            tokens = _plus(tokens, line)
        elif line.startswith(_KV):
            value = _value(line)
            if value is not None:
                kv = value if kv is None else max(kv, value)
    return WorkerLoad(int(waiting) if waiting is not None else None,
                      int(running) if running is not None else None, tokens, kv)


def _plus(total: float | None, line: str) -> float | None:
    """``total`` plus the sample on ``line`` (summed over engines); an
    unreadable sample leaves it as it was."""
    value = _value(line)
    if value is None:
        return total
    return (total or 0.0) + value


def _value(line: str) -> float | None:
    try:
        return float(line.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return None


class HealthMonitor:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.session: aiohttp.ClientSession | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3.0),
            auto_decompress=True,
        )
        self._ticker = asyncio.create_task(self._tick(), name="router-ticker")
        self.reconcile()

    async def stop(self) -> None:
        tasks = [*self.tasks.values()]
        if self._ticker is not None:
            tasks.append(self._ticker)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
        if self.session is not None:
            await self.session.close()

    def reconcile(self) -> None:
        """One probe loop per backend in the table; loops of removed ones end."""
        if self.session is None:
            return
        current = {id(b): b for b in self.router.pool.backends.values()}
        for key, task in list(self.tasks.items()):
            if key not in current:
                task.cancel()
                del self.tasks[key]
        for key, b in current.items():
            if key not in self.tasks:
                self.tasks[key] = asyncio.create_task(self._probe_loop(b),
                                                      name=f"probe-{b.name}")

    async def _probe_loop(self, b: BackendState) -> None:
        next_scrape = 0.0
        while not b.removed:
            table = self.router.pool.table
            if table is None:
                return
            hc = table.health_check
            ok = await self.probe(b, hc.timeout_seconds)
            if b.record_health(ok, hc.unhealthy_threshold, hc.healthy_threshold):
                if b.healthy:
                    log.info("backend %s healthy again", b.name)
                    self.router.pool.dispatch()
                else:
                    log.warning("backend %s unhealthy: %d failed health checks at %s",
                                b.name, b.health_failures, b.health_url)
            now = time.monotonic()
            interval = self.router.settings.scrape_interval
            if interval > 0 and now >= next_scrape:
                next_scrape = now + interval
                await self.scrape(b, hc.timeout_seconds)
                if b.gpu_url:
                    b.gpu = await self.read_gpu(b.gpu_url, hc.timeout_seconds)
            # Jitter so that many routers don't probe in lockstep.
            await asyncio.sleep(hc.interval_seconds * random.uniform(0.9, 1.1))

    async def probe(self, b: BackendState, limit: float) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(
                b.health_url, timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def scrape(self, b: BackendState, limit: float) -> None:
        assert self.session is not None
        try:
            async with self.session.get(
                b.metrics_url, timeout=aiohttp.ClientTimeout(total=max(limit, 1.0)),
            ) as resp:
                if resp.status != 200:
                    return
                text = await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError, UnicodeDecodeError):
            return
        waiting, running, tokens, kv_usage = parse_vllm_metrics(text)
        b.queue_depth = waiting
        b.engine_running = running
        b.kv_usage = kv_usage
        if tokens is not None:
            if b.generation_tokens is not None and tokens > b.generation_tokens:
                # The engine generated tokens since the last scrape: it is not
                # stalled, even if no response byte has come back yet (long
                # non-streaming answers).
                b.conns.last_progress = time.monotonic()
            b.generation_tokens = tokens

    async def read_gpu(self, url: str, limit: float) -> dict[str, Any] | None:
        """The worker agent's GPU snapshot, cut to what `top` and the
        inventory show; None when it can't be read."""
        assert self.session is not None
        try:
            async with self.session.get(
                url, timeout=aiohttp.ClientTimeout(total=max(limit, 1.0)),
            ) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        return {key: body.get(key) for key in GPU_FIELDS}

    async def _tick(self) -> None:
        sweep_at = 0.0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            self.check_stalls(now)
            pool = self.router.pool
            if pool.queue_length:
                pool.dispatch()  # ejections may have expired
            if now >= sweep_at:
                sweep_at = now + 1.0
                for b in pool.backends.values():
                    b.conns.sweep()

    def check_stalls(self, now: float) -> None:
        table = self.router.pool.table
        if table is None:
            return
        limit = table.stall_timeout_seconds
        for b in self.router.pool.backends.values():
            conns = b.conns
            if conns.active and now - conns.last_progress > limit:
                failed = conns.fail_active(UpstreamError(
                    "stall", f"no response byte or token for {limit:g}s"))
                seconds = b.eject(now, self.router.settings.ejection)
                self.router.count("ejections", f"{b.name}|stall")
                log.warning("backend %s stalled (no progress for %.1fs with %d requests in "
                            "flight): ejected for %.1fs", b.name, now - conns.last_progress,
                            failed, seconds)
                conns.last_progress = now
