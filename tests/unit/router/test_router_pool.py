"""The pool: who is eligible, canary split over real backend states, slots
and the wait queue, table changes, ejection and health thresholds."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router.budget import RetryBudget
from kubeinfer.router.pool import (
    EjectionPolicy,
    NoBackendError,
    Pool,
    QueueFullError,
    QueueTimeoutError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(backends: list[dict[str, Any]], **extra: Any) -> RoutingTable:
    return RoutingTable.model_validate(
        {
            "service": "svc",
            "model": "m",
            "strategy": "round-robin",
            "backends": [
                {"url": f"http://127.0.0.1:{9000 + i}", "revision": "r1", **b}
                for i, b in enumerate(backends)
            ],
            **extra,
        }
    )


def pool_of(backends: list[dict[str, Any]], **extra: Any) -> tuple[Pool, Clock]:
    clock = Clock()
    pool = Pool(clock=clock)
    pool.apply(table(backends, **extra))
    return pool, clock


def pick_names(pool: Pool, n: int, exclude: tuple[str, ...] = ()) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(n):
        b, _full = pool.pick(None, exclude)
        out.append(b.name if b else None)
        if b is not None:
            pool.release(b)
    return out


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {"a", "b", "c"}),
        ({"b": {"healthy": False}}, {"a", "c"}),
        ({"b": {"draining": True}}, {"a", "c"}),
        ({"b": {"ejected_until": 2000.0}}, {"a", "c"}),
        ({"b": {"ejected_until": 999.0}}, {"a", "b", "c"}),  # ejection over
        ({"b": {"weight": 0}}, {"a", "c"}),
        ({"a": {"healthy": False}, "b": {"draining": True}, "c": {"ejected_until": 1e9}}, {None}),
    ],
)
def test_only_available_backends_are_picked(
    changes: dict[str, dict[str, Any]], expected: set[str | None]
) -> None:
    pool, _ = pool_of([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    for name, attrs in changes.items():
        for key, value in attrs.items():
            setattr(pool.backends[name], key, value)
    assert set(pick_names(pool, 30)) == expected


def test_excluded_backends_are_skipped() -> None:
    pool, _ = pool_of([{"name": "a"}, {"name": "b"}])
    assert set(pick_names(pool, 10, exclude=("a",))) == {"b"}


@pytest.mark.parametrize(
    ("weights", "revisions", "expected"),
    [
        ({"r1": 90, "r2": 10}, ["r1", "r1", "r2"], {"r1": 90, "r2": 10}),
        ({"r1": 50, "r2": 50}, ["r1", "r2", "r2", "r2"], {"r1": 50, "r2": 50}),
        ({"r1": 100, "r2": 0}, ["r1", "r2"], {"r1": 100}),
        ({"r2": 100}, ["r1", "r2"], {"r2": 100}),  # r1 unlisted: no traffic
        ({}, ["r1", "r2", "r2", "r2"], {"r1": 25, "r2": 75}),  # shared by capacity
    ],
)
def test_canary_split_over_revisions(
    weights: dict[str, int], revisions: list[str], expected: dict[str, int]
) -> None:
    pool, _ = pool_of(
        [{"name": f"b{i}", "revision": r} for i, r in enumerate(revisions)], revisionWeights=weights
    )
    counts = collections.Counter(
        pool.backends[n].revision  # type: ignore[index]
        for n in pick_names(pool, 100)
    )
    assert counts == expected


def test_canary_without_healthy_backends_hands_its_share_over() -> None:
    pool, _ = pool_of(
        [{"name": "s", "revision": "stable"}, {"name": "c", "revision": "canary"}],
        revisionWeights={"stable": 90, "canary": 10},
    )
    pool.backends["c"].healthy = False
    assert set(pick_names(pool, 50)) == {"s"}


def test_unlisted_revision_serves_when_nothing_else_can() -> None:
    pool, _ = pool_of(
        [{"name": "old", "revision": "r1"}, {"name": "new", "revision": "r2"}],
        revisionWeights={"r2": 100},
    )
    pool.backends["new"].healthy = False
    assert set(pick_names(pool, 5)) == {"old"}


def test_full_canary_spills_over_before_queueing() -> None:
    pool, _ = pool_of(
        [
            {"name": "s", "revision": "stable", "maxConcurrency": 10},
            {"name": "c", "revision": "canary", "maxConcurrency": 1},
        ],
        revisionWeights={"stable": 50, "canary": 50},
    )
    held = [pool.pick(None)[0] for _ in range(11)]
    assert collections.Counter(b.name for b in held if b) == {"s": 10, "c": 1}
    assert pool.pick(None) == (None, True)


def test_max_concurrency_reserves_slots() -> None:
    pool, _ = pool_of([{"name": "a", "maxConcurrency": 2}, {"name": "b", "maxConcurrency": 1}])
    got = [pool.pick(None)[0] for _ in range(3)]
    assert sorted(b.name for b in got if b) == ["a", "a", "b"]
    assert pool.pick(None) == (None, True)
    pool.release(got[0])  # type: ignore[arg-type]
    b, full = pool.pick(None)
    assert b is got[0]
    assert not full


async def test_wait_queue_is_fifo_and_dispatched_on_release() -> None:
    pool, _ = pool_of([{"name": "a", "maxConcurrency": 1}], queueSize=2)
    first, _ = pool.pick(None)
    assert first is not None
    w1 = asyncio.create_task(pool.wait_for_slot(None, (), 5.0))
    w2 = asyncio.create_task(pool.wait_for_slot(None, (), 5.0))
    await asyncio.sleep(0)
    assert pool.queue_length == 2
    with pytest.raises(QueueFullError):
        await pool.wait_for_slot(None, (), 5.0)
    pool.release(first)
    got = await asyncio.wait_for(w1, 1.0)
    assert got is first
    assert not w2.done()
    pool.release(got)
    assert await asyncio.wait_for(w2, 1.0) is first
    assert pool.queue_length == 0
    assert first.in_flight == 1


async def test_wait_queue_times_out() -> None:
    pool, _ = pool_of([{"name": "a", "maxConcurrency": 1}], queueSize=4)
    pool.pick(None)
    with pytest.raises(QueueTimeoutError):
        await pool.wait_for_slot(None, (), 0.05)
    assert pool.queue_length == 0


async def test_waiters_fail_when_no_backend_is_left() -> None:
    pool, _ = pool_of([{"name": "a", "maxConcurrency": 1}], queueSize=4)
    pool.pick(None)
    waiter = asyncio.create_task(pool.wait_for_slot(None, (), 5.0))
    await asyncio.sleep(0)
    pool.backends["a"].healthy = False
    pool.dispatch()
    with pytest.raises(NoBackendError):
        await asyncio.wait_for(waiter, 1.0)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    pool, _ = pool_of([{"name": "a", "maxConcurrency": 1}], queueSize=4)
    held, _ = pool.pick(None)
    waiter = asyncio.create_task(pool.wait_for_slot(None, (), 5.0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.queue_length == 0
    pool.release(held)  # type: ignore[arg-type]
    assert pool.backends["a"].in_flight == 0


def test_new_table_keeps_live_state_of_unchanged_backends() -> None:
    pool, _ = pool_of([{"name": "a"}, {"name": "b"}])
    a = pool.backends["a"]
    a.in_flight = 3
    a.stats.requests = 7
    added, removed = pool.apply(table([{"name": "a"}, {"name": "c"}], generation=2))
    assert pool.backends["a"] is a
    assert a.in_flight == 3
    assert a.stats.requests == 7
    assert [b.name for b in added] == ["c"]
    assert [b.name for b in removed] == ["b"]
    assert removed[0].removed


def test_new_url_or_revision_means_a_new_backend() -> None:
    pool, _ = pool_of([{"name": "a"}])
    a = pool.backends["a"]
    pool.apply(table([{"name": "a", "url": "http://127.0.0.1:7777"}]))
    assert pool.backends["a"] is not a
    assert a.removed


def test_table_settings_update_in_place() -> None:
    pool, _ = pool_of([{"name": "a"}])
    a = pool.backends["a"]
    pool.apply(table([{"name": "a", "draining": True, "maxConcurrency": 4, "weight": 3}]))
    assert (a.draining, a.max_concurrency, a.weight) == (True, 4, 3)


def test_ejection_time_grows_and_is_forgotten() -> None:
    pool, clock = pool_of([{"name": "a"}])
    a = pool.backends["a"]
    policy = EjectionPolicy(
        consecutive_failures=3, base_seconds=1.0, max_seconds=8.0, forget_after_seconds=100.0
    )
    assert [a.record_failure(clock.now, policy) for _ in range(3)] == [False, False, True]
    assert a.ejected_until == clock.now + 1.0
    durations = []
    for _ in range(5):
        clock.now = a.ejected_until + 0.01
        assert a.available(clock.now)
        # On probation: the first failure after re-admission ejects again.
        assert a.record_failure(clock.now, policy)
        durations.append(round(a.ejected_until - clock.now, 3))
    assert durations == [2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 500
    a.record_success()
    for _ in range(3):
        a.record_failure(clock.now, policy)
    assert a.ejected_until == clock.now + 1.0


def test_success_clears_probation() -> None:
    pool, clock = pool_of([{"name": "a"}])
    a = pool.backends["a"]
    policy = EjectionPolicy(consecutive_failures=2)
    a.eject(clock.now, policy)
    clock.now = a.ejected_until + 1
    a.record_success()
    assert not a.record_failure(clock.now, policy)


@pytest.mark.parametrize(
    ("results", "unhealthy", "healthy", "expected"),
    [
        ([False], 2, 1, True),
        ([False, False], 2, 1, False),
        ([False, True, False], 2, 1, True),
        ([False, False, True], 2, 1, True),
        ([False, False, True], 2, 2, False),
        ([False, False, True, True], 2, 2, True),
    ],
)
def test_health_thresholds(
    results: list[bool], unhealthy: int, healthy: int, expected: bool
) -> None:
    pool, _ = pool_of([{"name": "a"}])
    a = pool.backends["a"]
    for ok in results:
        a.record_health(ok, unhealthy, healthy)
    assert a.healthy is expected


def test_retry_budget_limits_retries_to_a_ratio() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, cap=5.0, clock=clock)
    budget.tokens = 0.0
    for _ in range(100):
        budget.deposit()
    allowed = sum(budget.withdraw() for _ in range(50))
    assert allowed == 5  # capped: a quiet period can't save up for a storm
    for _ in range(30):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(50)) == 3


def test_retry_budget_allows_a_trickle_at_low_traffic() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, min_per_second=2.0, cap=10.0, clock=clock)
    budget.tokens = 0.0
    budget.withdraw()
    clock.now += 1.0
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]


def test_snapshot_has_backends_revisions_and_queue() -> None:
    pool, clock = pool_of(
        [{"name": "a", "revision": "r1"}, {"name": "b", "revision": "r2"}],
        revisionWeights={"r1": 50, "r2": 50},
        queueSize=7,
    )
    a = pool.backends["a"]
    pool.record_attempt(a, "200", False, 0.010, 0.002, clock.now)
    pool.record_attempt(a, "503", True, 0.020, 0.020, clock.now)
    snap = pool.snapshot(clock.now, clock.now - 5)
    assert snap["queue"] == {"length": 0, "capacity": 7}
    assert [b["name"] for b in snap["backends"]] == ["a", "b"]
    assert snap["revisions"]["r1"]["stats"]["requests"] == 2
    assert snap["revisions"]["r1"]["window"]["errors"] == 1
    assert snap["revisions"]["r2"]["stats"]["requests"] == 0
