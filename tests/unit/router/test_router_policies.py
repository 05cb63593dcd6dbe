"""Balancing policies against stand-in backends: evenness, exact weights,
bounded load, canary split. Tables of cases, exact expected sequences."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import pytest
from kubeinfer.operator.api.spec import Strategy
from kubeinfer.router.policies import (
    LeastLoaded,
    PrefixAffinity,
    RevisionSplitter,
    RoundRobin,
    SmoothWeighted,
    make_policy,
    stable_hash,
)


@dataclass
class B:
    name: str
    weight: int = 1
    in_flight: int = 0
    queue_depth: int | None = None
    engine_running: int | None = None
    kv_usage: float | None = None
    prefill_pending: int = 0


def names(n: int) -> list[B]:
    return [B(f"b{i}") for i in range(n)]


def run(policy: object, backends: list[B], picks: int, key: int | None = None) -> list[str]:
    out = []
    for _ in range(picks):
        out.append(policy.choose(backends, key).name)  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_round_robin_is_exactly_even(n: int) -> None:
    counts = collections.Counter(run(RoundRobin(), names(n), n * 50))
    assert set(counts.values()) == {50}


def test_round_robin_cycles_in_order() -> None:
    assert run(RoundRobin(), names(3), 6) == ["b0", "b1", "b2", "b0", "b1", "b2"]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        # nginx's example: interleaved, not bursts.
        ({"a": 5, "b": 1, "c": 1}, ["a", "a", "b", "a", "c", "a", "a"]),
        ({"a": 1, "b": 1}, ["a", "b"]),
        ({"a": 2, "b": 1}, ["a", "b", "a"]),
        ({"a": 3, "b": 0}, ["a", "a", "a"]),
    ],
)
def test_smooth_weighted_sequence(weights: dict[str, int], expected: list[str]) -> None:
    backends = [B(n, weight=w) for n, w in weights.items()]
    assert run(SmoothWeighted(), backends, len(expected)) == expected


@pytest.mark.parametrize(
    "weights",
    [[1, 1, 1], [5, 1, 1], [10, 3, 2, 1], [100, 1], [7, 13]],
)
def test_smooth_weighted_is_exact_over_every_window(weights: list[int]) -> None:
    backends = [B(f"b{i}", weight=w) for i, w in enumerate(weights)]
    policy = SmoothWeighted()
    total = sum(weights)
    for _window in range(5):
        counts = collections.Counter(run(policy, backends, total))
        assert [counts[f"b{i}"] for i in range(len(weights))] == weights


def test_smooth_weighted_survives_a_backend_leaving_and_returning() -> None:
    a, b, c = B("a", weight=2), B("b", weight=1), B("c", weight=1)
    policy = SmoothWeighted()
    run(policy, [a, b, c], 3)
    run(policy, [a, c], 7)  # b ejected for a while
    counts = collections.Counter(run(policy, [a, b, c], 400))
    assert counts == {"a": 200, "b": 100, "c": 100}


@pytest.mark.parametrize(
    ("loads", "queues", "expected"),
    [
        ([3, 1, 2], [None, None, None], "b1"),
        ([1, 1, 1], [5, 0, 3], "b1"),  # tie on in-flight: the worker's own queue decides
        ([0, 2, 0], [4, 0, 1], "b2"),
        ([2, 2], [None, 1], "b0"),  # unknown queue depth counts as 0
    ],
)
def test_least_loaded_choice(loads: list[int], queues: list[int | None], expected: str) -> None:
    backends = [
        B(f"b{i}", in_flight=n, queue_depth=q)
        for i, (n, q) in enumerate(zip(loads, queues, strict=True))
    ]
    assert LeastLoaded().choose(backends, None).name == expected


def test_least_loaded_spreads_equal_backends_evenly() -> None:
    counts = collections.Counter(run(LeastLoaded(), names(4), 400))
    assert set(counts.values()) == {100}


def test_least_loaded_keeps_in_flight_balanced_under_load() -> None:
    backends = names(4)
    policy = LeastLoaded()
    for _ in range(40):
        policy.choose(backends, None).in_flight += 1
    assert [b.in_flight for b in backends] == [10, 10, 10, 10]


def test_prefix_affinity_same_key_same_backend() -> None:
    backends = names(5)
    policy = PrefixAffinity(load_factor=1.25)
    for k in range(50):
        key = stable_hash(f"session-{k}".encode())
        assert len(set(run(policy, backends, 5, key))) == 1


def test_prefix_affinity_spreads_many_keys() -> None:
    backends = names(4)
    policy = PrefixAffinity()
    counts = collections.Counter(
        policy.choose(backends, stable_hash(f"user-{k}".encode())).name for k in range(4000)
    )
    assert len(counts) == 4
    assert min(counts.values()) > 4000 / 4 * 0.6


def test_prefix_affinity_moves_only_the_removed_backends_keys() -> None:
    backends = names(5)
    policy = PrefixAffinity()
    keys = [stable_hash(f"k{i}".encode()) for i in range(1000)]
    before = {k: policy.choose(backends, k).name for k in keys}
    survivors = [b for b in backends if b.name != "b2"]
    after = {k: policy.choose(survivors, k).name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "b2" for k in moved)


@pytest.mark.parametrize(("n", "load_factor"), [(2, 1.25), (4, 1.25), (8, 1.5), (3, 1.0)])
def test_prefix_affinity_bounded_load_with_one_hot_key(n: int, load_factor: float) -> None:
    """One key sends everything: no backend may exceed ceil(c * average)."""
    backends = names(n)
    policy = PrefixAffinity(load_factor)
    hot = stable_hash(b"the same system prompt")
    for placed in range(1, 10 * n + 1):
        chosen = policy.choose(backends, hot)
        total = sum(b.in_flight for b in backends)
        bound = -(-load_factor * (total + 1) // n)
        assert chosen.in_flight < bound
        chosen.in_flight += 1
        assert sum(b.in_flight for b in backends) == placed
    assert max(b.in_flight for b in backends) <= -(-load_factor * 10 * n // n) + 1


def test_prefix_affinity_without_key_is_least_loaded() -> None:
    backends = [B("a", in_flight=3), B("b", in_flight=0)]
    assert PrefixAffinity().choose(backends, None).name == "b"


@pytest.mark.parametrize(
    ("weights", "picks", "expected"),
    [
        ({"stable": 90, "canary": 10}, 100, {"stable": 90, "canary": 10}),
        ({"stable": 75, "canary": 25}, 200, {"stable": 150, "canary": 50}),
        ({"stable": 50, "canary": 50}, 10, {"stable": 5, "canary": 5}),
        ({"stable": 99, "canary": 1}, 100, {"stable": 99, "canary": 1}),
        ({"a": 20, "b": 30, "c": 50}, 100, {"a": 20, "b": 30, "c": 50}),
    ],
)
def test_canary_split_is_exact(
    weights: dict[str, int], picks: int, expected: dict[str, int]
) -> None:
    splitter = RevisionSplitter()
    counts = collections.Counter(
        splitter.choose(weights, list(weights), None) for _ in range(picks)
    )
    assert counts == expected


def test_canary_split_by_key_is_sticky_and_proportional() -> None:
    splitter = RevisionSplitter()
    weights = {"stable": 80, "canary": 20}
    keys = [stable_hash(f"s{i}".encode()) for i in range(5000)]
    first = [splitter.choose(weights, ["stable", "canary"], k) for k in keys]
    again = [splitter.choose(weights, ["stable", "canary"], k) for k in keys]
    assert first == again
    share = first.count("canary") / len(keys)
    assert 0.17 < share < 0.23


def test_canary_split_skips_revisions_not_eligible() -> None:
    splitter = RevisionSplitter()
    picks = {splitter.choose({"stable": 90, "canary": 10}, ["stable"], None) for _ in range(20)}
    assert picks == {"stable"}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_has_a_policy(strategy: Strategy) -> None:
    backends = names(3)
    assert make_policy(strategy).choose(backends, None) in backends


def test_stable_hash_is_stable_across_processes() -> None:
    # A fixed value: Python's salted hash() would differ per process and
    # send one session to different workers behind different routers.
    assert stable_hash(b"abc") == 15617099051652453721
