"""The backend pool: live state of every worker and the choice of one.

`Pool.apply` takes a new routing table without disturbing requests in
flight: a backend that stays (same name and URL) keeps its state, counters
and connections; a removed one finishes what it has. `Pool.pick` is the
synchronous hot path: revision split first, then the revision's policy over
the backends that are healthy, not ejected, not draining and have a free
slot. When every such backend is at its max concurrency, requests wait in a
bounded FIFO (`Pool.wait_for_slot`) and are placed as slots free up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubeinfer.operator.api.routing import Backend, RoutingTable
from kubeinfer.operator.api.spec import Strategy
from kubeinfer.router.policies import (
    Policy,
    PrefixAffinity,
    PrefixScore,
    RevisionSplitter,
    make_policy,
)
from kubeinfer.router.stats import AttemptStats, Window
from kubeinfer.router.upstream import UpstreamPool


class QueueFullError(Exception):
    """Every backend is busy and the wait queue is full."""


class QueueTimeoutError(Exception):
    """Waited for a free slot longer than the queue timeout."""


class NoBackendError(Exception):
    """No healthy backend can take the request."""


@dataclass(frozen=True)
class EjectionPolicy:
    """Passive outlier ejection: consecutive failures take a backend out for a
    while; every ejection soon after the last one doubles the time out."""

    consecutive_failures: int = 3
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    # An ejection this long after the previous one starts again at base_seconds.
    forget_after_seconds: float = 120.0


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port


class BackendState:
    """One worker as the router sees it: table entry plus live state."""

    def __init__(self, spec: Backend, *, idle_timeout: float, window_seconds: int = 60) -> None:
        self.name = spec.name
        self.url = spec.url.rstrip("/")
        self.host, self.port = _hostport(self.url)
        self.base_path = urlsplit(self.url).path.rstrip("/").encode()
        self.host_line = b"host: %s:%d\r\n" % (self.host.encode(), self.port)
        self.header_line = b"x-kubeinfer-backend: " + self.name.encode() + b"\r\n"
        self.revision = spec.revision
        self.name_json = json.dumps(self.name)
        self.revision_json = json.dumps(self.revision)
        self.weight = spec.weight
        self.draining = spec.draining
        self.max_concurrency = spec.max_concurrency
        self.health_url = spec.health_url or self.url + "/health"
        self.metrics_url = self.url + "/metrics"
        self.gpu_url = spec.gpu_url
        # Live state.
        self.healthy = True  # the operator lists ready workers; checks correct it
        self.health_failures = 0
        self.health_successes = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.last_ejected_at = -1e18
        self.probation = False
        self.consecutive_failures = 0
        self.in_flight = 0
        # Prompt blocks of this router's attempts here that have no first
        # byte back yet, by attempt, and their sum (`Candidate.prefill_pending`).
        self.prefill: dict[int, int] = {}
        self.prefill_pending = 0
        self.queue_depth: int | None = None  # vllm:num_requests_waiting, last scraped
        self.engine_running: int | None = None  # vllm:num_requests_running, last scraped
        self.kv_usage: float | None = None  # vllm:kv_cache_usage_perc, last scraped
        self.generation_tokens: float | None = None
        self.removed = False
        self.stats = AttemptStats()
        # Per-worker window (req/s, p50/p99) and the start of each running
        # attempt (monotonic), for `kubectl kubeinfer top`.
        self.window = Window(window_seconds)
        self.running: dict[int, float] = {}
        # The worker agent's last /gpu answer (the fields `top` and the
        # operator's inventory show), or None.
        self.gpu: dict[str, Any] | None = None
        self.conns = UpstreamPool(self.host, self.port, idle_timeout=idle_timeout,
                                  tls=self.url.startswith("https://"))

    def reserve_prefill(self, owner: int, blocks: int) -> None:
        """Attempt ``owner`` sent a prompt here that needs ``blocks`` of prefill."""
        self.prefill[owner] = blocks
        self.prefill_pending += blocks

    def prefill_done(self, owner: int) -> None:
        """Attempt ``owner`` got its first byte, or ended: its prefill is not ahead any more."""
        self.prefill_pending -= self.prefill.pop(owner, 0)

    def update(self, spec: Backend) -> None:
        """Take the table's new settings for the same worker."""
        self.weight = spec.weight
        self.draining = spec.draining
        self.max_concurrency = spec.max_concurrency
        self.health_url = spec.health_url or self.url + "/health"
        self.gpu_url = spec.gpu_url

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def available(self, now: float) -> bool:
        return (self.healthy and not self.draining and not self.removed and self.weight > 0
                and self.ejected_until <= now)

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.probation = False

    def record_failure(self, now: float, policy: EjectionPolicy) -> bool:
        """Count a failed attempt; True when this failure ejected the backend."""
        self.consecutive_failures += 1
        if self.ejected(now):
            return False
        if self.probation or self.consecutive_failures >= policy.consecutive_failures:
            self.eject(now, policy)
            return True
        return False

    def eject(self, now: float, policy: EjectionPolicy) -> float:
        """Take the backend out of rotation; returns for how long."""
        if now - self.last_ejected_at > policy.forget_after_seconds:
            self.ejections = 0
        seconds = float(min(policy.base_seconds * (2**self.ejections), policy.max_seconds))
        self.ejections += 1
        self.last_ejected_at = now
        self.ejected_until = now + seconds
        self.consecutive_failures = 0
        # Back in after the delay, but the first failure sends it out again.
        self.probation = True
        return seconds

    def record_health(self, ok: bool, unhealthy_threshold: int, healthy_threshold: int) -> bool:
        """Apply one active probe result; True when ``healthy`` changed."""
        if ok:
            self.health_failures = 0
            self.health_successes += 1
            if not self.healthy and self.health_successes >= healthy_threshold:
                self.healthy = True
                return True
        else:
            self.health_successes = 0
            self.health_failures += 1
            if self.healthy and self.health_failures >= unhealthy_threshold:
                self.healthy = False
                return True
        return False


class _Waiter:
    __slots__ = ("blocks", "exclude", "fut", "key", "owner")

    def __init__(self, fut: asyncio.Future[BackendState], key: int | None,
                 exclude: Collection[str], blocks: Sequence[int], owner: int | None) -> None:
        self.fut = fut
        self.key = key
        self.exclude = exclude
        self.blocks = blocks
        self.owner = owner


class _Group:
    __slots__ = ("backends", "policy")

    def __init__(self, policy: Policy) -> None:
        self.backends: list[BackendState] = []
        self.policy = policy


class Pool:
    """All backends of one routing table, their groups and the wait queue."""

    def __init__(self, *, idle_timeout: float = 4.0, stats_window: int = 60,
                 clock: Callable[[], float] | None = None) -> None:
        self.table: RoutingTable | None = None
        self.backends: dict[str, BackendState] = {}
        self.revision_stats: dict[str, AttemptStats] = {}
        self.revision_windows: dict[str, Window] = {}
        self.idle_timeout = idle_timeout
        self.stats_window = stats_window
        self.clock = clock or time.monotonic
        self._groups: dict[str, _Group] = {}
        self._weights: dict[str, int] = {}
        self._splitter = RevisionSplitter()
        self._queue: collections.deque[_Waiter] = collections.deque()
        self.queue_size = 0
        self.hold_seconds = 0.0
        self.strategy = Strategy.LEAST_LOADED
        # Demand, for the operator's autoscaler: requests that arrived, and when the last did.
        self.arrivals = 0
        self.last_arrival: float | None = None

    # -- table ----------------------------------------------------------------

    def apply(self, table: RoutingTable) -> tuple[list[BackendState], list[BackendState]]:
        """Switch to ``table``; returns (added, removed) backends."""
        old = self.backends
        new: dict[str, BackendState] = {}
        added: list[BackendState] = []
        for spec in table.backends:
            have = old.get(spec.name)
            if (have is not None and have.url == spec.url.rstrip("/")
                    and have.revision == spec.revision):
                have.update(spec)
                new[spec.name] = have
            else:
                state = BackendState(spec, idle_timeout=self.idle_timeout,
                                     window_seconds=self.stats_window)
                new[spec.name] = state
                added.append(state)
        removed = [b for name, b in old.items() if new.get(name) is not b]
        for b in removed:
            b.removed = True
            b.conns.close_idle(retire=True)
        strategy_changed = self.table is None or table.strategy != self.table.strategy
        same_shape = (self.table is not None and not strategy_changed
                      and bool(table.revision_weights) == bool(self.table.revision_weights))
        groups: dict[str, _Group] = {}
        for b in new.values():
            key = b.revision if table.revision_weights else "*"
            group = groups.get(key)
            if group is None:
                previous = self._groups.get(key) if same_shape else None
                policy = previous.policy if previous is not None else make_policy(
                    table.strategy, load_factor=table.load_factor)
                if isinstance(policy, PrefixAffinity | PrefixScore):
                    policy.load_factor = table.load_factor
                group = groups[key] = _Group(policy)
            group.backends.append(b)
        for group in groups.values():
            if isinstance(group.policy, PrefixAffinity | PrefixScore):
                group.policy.set_members([b.name for b in group.backends])
        for b in new.values():
            if b.revision not in self.revision_stats:
                self.revision_stats[b.revision] = AttemptStats()
                self.revision_windows[b.revision] = Window(self.stats_window)
        self.backends = new
        self._groups = groups
        self._weights = dict(table.revision_weights)
        self.table = table
        self.strategy = table.strategy
        self.queue_size = table.queue_size
        self.hold_seconds = table.hold_seconds
        self.dispatch()
        return added, removed

    # -- choosing -------------------------------------------------------------

    def pick(self, key: int | None, exclude: Collection[str] = (),
             blocks: Sequence[int] = (), owner: int | None = None
             ) -> tuple[BackendState | None, bool]:
        """Choose a backend for one attempt and reserve its slot (and, under
        prefix-score, the prefill it is expected to need there, for attempt
        ``owner``: `release` with the same owner frees both).

        Returns ``(backend, False)`` on success, ``(None, True)`` when healthy
        backends exist but all are at their max concurrency (wait for a
        slot), and ``(None, False)`` when no healthy backend exists.
        """
        now = self.clock()
        available: dict[str, list[BackendState]] = {}
        for rev, group in self._groups.items():
            avail = [b for b in group.backends if b.available(now) and b.name not in exclude]
            if avail:
                available[rev] = avail
        if not available:
            return None, False
        order: list[str]
        if len(available) == 1:
            order = list(available)
        else:
            weights = self._weights
            eligible = [r for r in available if weights.get(r, 0) > 0]
            if not eligible:
                # Only revisions without traffic share are healthy: better
                # serve from them than answer 503.
                eligible = list(available)
                weights = dict.fromkeys(eligible, 1)
            first = self._splitter.choose(weights, eligible, key)
            order = [first, *(r for r in eligible if r != first)]
        for rev in order:
            free = [b for b in available[rev]
                    if b.max_concurrency is None or b.in_flight < b.max_concurrency]
            if free:
                policy = self._groups[rev].policy
                if isinstance(policy, PrefixScore):
                    b, prefill = policy.place(free, key, blocks)
                    if owner is not None and prefill:
                        b.reserve_prefill(owner, prefill)
                else:
                    b = policy.choose(free, key, blocks)
                b.in_flight += 1
                return b, False
        return None, True

    def release(self, backend: BackendState, owner: int | None = None) -> None:
        """An attempt on ``backend`` ended: free its slot for a waiting
        request (and attempt ``owner``'s prefill, if it is still counted)."""
        if owner is not None:
            backend.prefill_done(owner)
        backend.in_flight -= 1
        if self._queue:
            self.dispatch()

    # -- waiting --------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    async def wait_for_slot(self, key: int | None, exclude: Collection[str],
                            wait_seconds: float, blocks: Sequence[int] = (),
                            owner: int | None = None) -> BackendState:
        """Wait in the FIFO for a free slot; the returned backend's slot is reserved.

        Raises `QueueFullError`, `QueueTimeoutError`, or `NoBackendError` (every backend
        became unhealthy while waiting).
        """
        if len(self._queue) >= self.queue_size:
            raise QueueFullError
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), key, exclude, blocks, owner)
        self._queue.append(waiter)
        timer = loop.call_later(wait_seconds, self._expire, waiter)
        try:
            return await waiter.fut
        except asyncio.CancelledError:
            if waiter.fut.done() and not waiter.fut.cancelled() and waiter.fut.exception() is None:
                # Placed and cancelled in the same tick: give the slot back.
                self.release(waiter.fut.result(), owner)
            raise
        finally:
            timer.cancel()
            self._forget(waiter)

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)

    def _expire(self, waiter: _Waiter) -> None:
        if not waiter.fut.done():
            waiter.fut.set_exception(QueueTimeoutError())
        self._forget(waiter)

    def dispatch(self) -> None:
        """Place waiting requests on free slots, oldest first."""
        queue = self._queue
        while queue:
            w = queue[0]
            if w.fut.done():
                queue.popleft()
                continue
            backend, full = self.pick(w.key, w.exclude, w.blocks, w.owner)
            if backend is not None:
                queue.popleft()
                w.fut.set_result(backend)
                continue
            if full or self.hold_seconds > 0:
                # Held requests (scale from zero) wait for a worker until their own timer.
                return
            queue.popleft()
            w.fut.set_exception(NoBackendError())

    def note_arrival(self) -> None:
        """A client request arrived (demand the autoscaler reads)."""
        self.arrivals += 1
        self.last_arrival = self.clock()

    # -- views ----------------------------------------------------------------

    def metadata_backends(self) -> list[BackendState]:
        """Available backends to ask for metadata (``/v1/models``), best first.

        The revision with the largest traffic share comes first: during a
        canary, clients should see what the stable revision serves (its
        ``max_model_len``), not whatever the 10 % canary says. Within a
        revision, the least busy first. No slot is taken: vLLM answers
        metadata from its API process, whatever the engine is doing.
        """
        now = self.clock()
        weights = self._weights
        avail = [b for b in self.backends.values() if b.available(now)]
        return sorted(avail, key=lambda b: (-weights.get(b.revision, 0), b.in_flight, b.name))

    def available_count(self) -> int:
        now = self.clock()
        return sum(1 for b in self.backends.values() if b.available(now))

    def record_attempt(self, backend: BackendState, status: str, error: bool,
                       latency_s: float | None, ttft_s: float | None, now: float) -> None:
        backend.stats.record(status, error, latency_s, ttft_s)
        backend.window.record(now, error, latency_s, ttft_s)
        rev = backend.revision
        stats = self.revision_stats.get(rev)
        if stats is None:
            stats = self.revision_stats[rev] = AttemptStats()
            self.revision_windows[rev] = Window(self.stats_window)
        stats.record(status, error, latency_s, ttft_s)
        self.revision_windows[rev].record(now, error, latency_s, ttft_s)

    def snapshot(self, now: float, started: float) -> dict[str, Any]:
        """Plain-data state of this process (see `stats.merge_snapshots`)."""
        table = self.table
        window_seconds = float(min(self.stats_window, max(now - started, 0.0)))
        revisions = {}
        for rev, stats in self.revision_stats.items():
            window = self.revision_windows[rev].snapshot(now)
            window["seconds"] = round(window_seconds, 3)
            revisions[rev] = {"stats": stats.snapshot(), "window": window}
        return {
            "generation": table.generation if table else 0,
            "model": table.model if table else "",
            "windowSeconds": round(window_seconds, 3),
            "backends": [
                {
                    "name": b.name,
                    "url": b.url,
                    "revision": b.revision,
                    "healthy": b.healthy,
                    "draining": b.draining,
                    "ejected": b.ejected(now),
                    "inFlight": b.in_flight,
                    "prefillPending": b.prefill_pending,
                    "queueDepth": b.queue_depth,
                    "stats": b.stats.snapshot(),
                    "window": b.window.snapshot(now),
                    "oldestRunningSeconds": (
                        round(now - min(b.running.values()), 3) if b.running else None
                    ),
                    "kvUsage": b.kv_usage,
                    "gpu": b.gpu,
                }
                for b in self.backends.values()
            ],
            "revisions": revisions,
            "queue": {"length": len(self._queue), "capacity": self.queue_size},
            "demand": {
                "arrivals": self.arrivals,
                "idleSeconds": round(now - (self.last_arrival if self.last_arrival is not None
                                            else started), 3),
            },
        }
