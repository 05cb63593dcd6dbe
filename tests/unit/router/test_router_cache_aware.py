"""Cache- and load-aware routing: router replicas agree on where a key lives,
bounded load under a hot prefix with worker-reported queues, and KV usage
steering choices to the emptier worker. Tables of cases over stand-ins and
over real `Pool` objects (what one router process holds)."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any

import pytest
from kubeinfer.localcluster.waiting import async_wait_for
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router.policies import (
    KV_FULL,
    LeastLoaded,
    PrefixAffinity,
    PrefixScore,
    requests_on,
    stable_hash,
)
from kubeinfer.router.pool import Pool

KEYS = [stable_hash(f"user-{i}".encode()) for i in range(500)]


@dataclass
class B:
    name: str
    weight: int = 1
    in_flight: int = 0
    queue_depth: int | None = None
    engine_running: int | None = None
    kv_usage: float | None = None
    prefill_pending: int = 0


def table(names: list[str], generation: int = 1, strategy: str = "prefix-affinity",
          **backend: Any) -> RoutingTable:
    return RoutingTable.model_validate(
        {
            "service": "svc",
            "model": "m",
            "strategy": strategy,
            "generation": generation,
            "backends": [
                {"name": n, "url": f"http://127.0.0.1:{9000 + i}", "revision": "r1", **backend}
                for i, n in enumerate(names)
            ],
        }
    )


def placements(pool: Pool, keys: list[int]) -> dict[int, str]:
    out = {}
    for k in keys:
        b, _full = pool.pick(k)
        assert b is not None
        out[k] = b.name
        pool.release(b)  # idle pool: only the ring decides
    return out


def fresh_pool(names: list[str]) -> Pool:
    pool = Pool()
    pool.apply(table(names))
    return pool


EIGHT = [f"w{i}" for i in range(8)]


@pytest.mark.parametrize(
    ("history", "why"),
    [
        ([EIGHT], "a second replica that saw the same table"),
        ([[*EIGHT, "gone-1", "gone-2"], EIGHT], "a replica that saw since-removed workers"),
        ([EIGHT[:3], EIGHT[:6], EIGHT], "a replica that saw the table grow"),
        ([list(reversed(EIGHT))], "a table listing the workers in another order"),
    ],
)
def test_replicas_agree_on_every_key(history: list[list[str]], why: str) -> None:
    reference = placements(fresh_pool(EIGHT), KEYS)
    replica = Pool()
    for generation, names in enumerate(history, start=1):
        replica.apply(table(names, generation))
    assert placements(replica, KEYS) == reference, why


def test_a_restarted_router_places_keys_where_the_old_one_did() -> None:
    before = fresh_pool(EIGHT)
    first = placements(before, KEYS)
    # Keys are spread (the check above is not trivially true).
    assert len(set(first.values())) == 8
    assert placements(fresh_pool(EIGHT), KEYS) == first


def test_an_unhealthy_worker_moves_only_its_own_keys_and_gets_them_back() -> None:
    pool = fresh_pool(EIGHT)
    before = placements(pool, KEYS)
    pool.backends["w3"].healthy = False
    during = placements(pool, KEYS)
    moved = [k for k in KEYS if before[k] != during[k]]
    assert moved
    assert all(before[k] == "w3" for k in moved)
    pool.backends["w3"].healthy = True
    assert placements(pool, KEYS) == before


@pytest.mark.parametrize(
    ("backend", "expected", "why"),
    [
        (B("a", in_flight=3), 3, "never scraped: this router's own count"),
        (B("a", in_flight=3, engine_running=2, queue_depth=1), 3,
         "the engine's 3 are this router's 3: not 6"),
        (B("a", in_flight=1, engine_running=4, queue_depth=2), 6,
         "other routers' requests show in the engine's count"),
        (B("a", in_flight=5, engine_running=1, queue_depth=0), 5,
         "a scrape older than this router's last requests"),
        (B("a", engine_running=0, queue_depth=7), 7, "waiting only"),
    ],
)
def test_requests_on_a_worker_are_counted_once(backend: B, expected: int, why: str) -> None:
    assert requests_on(backend) == expected, why


@pytest.mark.parametrize(("n", "load_factor", "queued"), [(4, 1.25, 0), (8, 1.25, 3), (8, 1.5, 1)])
def test_bounded_load_under_a_hot_prefix(n: int, load_factor: float, queued: int) -> None:
    """Every request has the same key (one system prompt). Workers also hold
    ``queued`` requests from other routers, which their scraped queue shows
    with this router's own: the bound counts them too."""
    backends = [B(f"b{i}", queue_depth=queued) for i in range(n)]
    policy = PrefixAffinity(load_factor)
    hot = stable_hash(b"the one long system prompt")
    for _ in range(20 * n):
        loads = [requests_on(b) for b in backends]
        bound = -(-load_factor * (sum(loads) + 1) // n)
        chosen = policy.choose(backends, hot)
        assert requests_on(chosen) < bound
        chosen.in_flight += 1
        chosen.queue_depth = queued + chosen.in_flight  # the engine counts ours too
    loads = [requests_on(b) for b in backends]
    assert loads == [queued + b.in_flight for b in backends]
    assert max(loads) <= -(-load_factor * sum(loads) // n)


def test_bound_sees_another_routers_queue() -> None:
    # This router has sent nothing, but the key's owner reports a long queue
    # (another replica's requests): the key spills instead of piling on.
    backends = [B(f"b{i}") for i in range(4)]
    policy = PrefixAffinity()
    key = KEYS[0]
    owner = policy.choose(backends, key)
    owner.queue_depth = 10
    assert policy.choose(backends, key) is not owner
    owner.queue_depth = 0
    assert policy.choose(backends, key) is owner


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        # Same in flight: the shorter worker queue wins.
        ([B("a", queue_depth=4), B("b", queue_depth=1), B("c", queue_depth=2)], "b"),
        # Same in flight and queue: the emptier KV cache wins.
        ([B("a", kv_usage=0.9), B("b", kv_usage=0.2), B("c", kv_usage=0.5)], "b"),
        # KV usage never outweighs requests in flight.
        (
            [
                B("a", in_flight=1, kv_usage=0.0),
                B("b", in_flight=2, kv_usage=0.0),
                B("c", in_flight=0, kv_usage=0.8),
            ],
            "c",
        ),
        # Unknown figures (not scraped yet) count as zero.
        ([B("a", kv_usage=0.3), B("b")], "b"),
    ],
)
def test_least_loaded_prefers_the_emptier_worker(backends: list[B], expected: str) -> None:
    policy = LeastLoaded()
    # Whatever the rotation's starting point.
    picks = {policy.choose(backends, None).name for _ in range(len(backends))}
    assert picks == {expected}


def test_prefix_affinity_passes_over_a_full_kv_cache() -> None:
    backends = [B(f"b{i}") for i in range(4)]
    policy = PrefixAffinity()
    key = KEYS[1]
    owner = policy.choose(backends, key)
    owner.kv_usage = KV_FULL
    other = policy.choose(backends, key)
    assert other is not owner
    owner.kv_usage = 0.5
    assert policy.choose(backends, key) is owner


def test_keys_spread_evenly_over_the_ring() -> None:
    policy = PrefixAffinity()
    backends = [B(f"w{i}") for i in range(8)]
    counts: collections.Counter[Any] = collections.Counter(
        policy.choose(backends, k).name for k in KEYS
    )
    assert len(counts) == 8
    assert min(counts.values()) > len(KEYS) / 8 * 0.5


# prefix-score (cost = prefill pending + MISS_COST x blocks to prefill,
# among a key's two ring homes; MISS_COST is 2): rows of (backends, what
# this router last sent where: {name: blocks}, request blocks, expected
# choice). Two backends: both are the key's homes.
P = (11, 12, 13, 14)
SCORES = [
    # Equal load: the worker holding the whole prefix.
    ([B("a"), B("b")], {"b": P}, P, "b"),
    # Longer leading match wins over a shorter one.
    ([B("a"), B("b")], {"a": P[:1], "b": P[:3]}, P, "b"),
    # Blocks after a mismatch do not count: one leading block beats three later ones.
    ([B("a"), B("b")], {"a": (99, *P[1:]), "b": P[:1]}, P, "b"),
    # One block cached (3 to prefill, cost 6) is worth up to 1 block of
    # prefill waiting there against the other home's 8; not 3.
    ([B("a", prefill_pending=1), B("b")], {"a": P[:1]}, P, "a"),
    ([B("a", prefill_pending=3), B("b")], {"a": P[:1]}, P, "b"),
    # The whole prompt cached is worth 7 blocks of prefill waiting, not 9
    # (the other home would prefill 4 blocks, cost 8).
    ([B("a", prefill_pending=7), B("b")], {"a": P}, P, "a"),
    ([B("a", prefill_pending=9), B("b")], {"a": P}, P, "b"),
    # It is the prefill ahead that counts, not the requests decoding there.
    ([B("a", in_flight=3), B("b", in_flight=1)], {"a": P}, P, "a"),
    # KV-cache usage is not scored (every cache is full at saturation).
    ([B("a", kv_usage=0.99), B("b", kv_usage=0.1)], {"a": P}, P, "a"),
    # At the load bound (1.25 x mean) a worker is out, whatever it holds.
    ([B("a", in_flight=5), B("b")], {"a": P}, P, "b"),
]


@pytest.mark.parametrize(("backends", "sent", "blocks", "expected"), SCORES)
def test_prefix_score_weighs_prefix_against_prefill_ahead(
    backends: list[B], sent: dict[str, tuple[int, ...]], blocks: tuple[int, ...], expected: str,
) -> None:
    for start in range(len(backends)):  # whatever the tie rotation's starting point
        policy = PrefixScore(load_factor=1.25)
        policy._start = start
        for name, prefix in sent.items():
            policy._remember(name, prefix)
        assert policy.choose(backends, None, blocks).name == expected


def test_prefix_score_ties_go_to_the_first_home_whatever_the_requests() -> None:
    """Both homes hold the prompt with no prefill ahead: the first home, even
    with more requests running (moving a conversation between two homes on
    such ties measured worse; docs/benchmarks.md)."""
    backends = [B("a"), B("b")]
    policy = PrefixScore()
    key = KEYS[0]
    first, second = policy.homes(key, backends)
    blocks = (key, key + 1, key + 2)
    for home in (first, second):
        policy._remember(home.name, blocks)
    first.in_flight, second.in_flight = 2, 0  # under the bound: 2 x (2 + 1) / 2 = 3
    assert policy.choose(backends, key, blocks) is first
    second.prefill_pending = 1  # and a block of prefill ahead there decides
    first.prefill_pending = 2
    assert policy.choose(backends, key, blocks) is second


def test_prefix_score_keeps_a_key_on_its_two_homes_across_replicas() -> None:
    """Two router replicas with different histories and loads send a key only
    to its two ring homes, so a prefix is cached on at most two workers."""
    backends = [B(f"w{i}", in_flight=2) for i in range(8)]  # busy, under the bound
    one, two = PrefixScore(), PrefixScore()
    one.set_members([b.name for b in backends])
    two.set_members([b.name for b in reversed(backends)])
    for k in KEYS[:50]:
        blocks = (k, k + 1)
        homes = {h.name for h in one.homes(k, backends)}
        assert len(homes) == 2
        assert {h.name for h in two.homes(k, backends)} == homes
        for step in range(3):
            backends[step].in_flight = 3  # loads differ a little from pick to pick
            assert one.choose(backends, k, blocks).name in homes
            assert two.choose(backends, None, blocks).name in homes  # key = first block
        for b in backends:
            b.in_flight = 2
    # Keys are spread: every worker is someone's home.
    assert {h.name for k in KEYS for h in one.homes(k, backends)} == {b.name for b in backends}


def test_prefix_score_spills_when_both_homes_are_at_the_bound() -> None:
    backends = [B(f"w{i}") for i in range(4)]
    policy = PrefixScore(load_factor=1.25)
    key = KEYS[3]
    homes = policy.homes(key, backends)
    for h in homes:
        policy._remember(h.name, (key,))  # both hold the prefix
        h.in_flight = 6  # mean 3, bound ceil(1.25 x 13 / 4) = 5
    assert policy.homes(key, backends) == []
    for _ in range(4):  # a hot prefix: it spreads over the others, never back to the homes
        chosen = policy.choose(backends, key, (key,))
        assert chosen not in homes
        assert chosen.in_flight < 5
        chosen.in_flight += 1


def test_prefix_score_keeps_a_prefix_where_it_sent_it_and_forgets_removed_workers() -> None:
    policy = PrefixScore()
    backends = [B(f"w{i}") for i in range(4)]
    policy.set_members([b.name for b in backends])
    prompts = [tuple(stable_hash(f"{p}-{j}".encode()) for j in range(8)) for p in range(6)]
    first = [policy.choose(backends, None, p).name for p in prompts]
    assert [policy.choose(backends, None, p).name for p in prompts] == first
    policy.set_members([b.name for b in backends if b.name != first[0]])
    assert policy.matched(first[0], prompts[0]) == 0
    assert policy.matched(first[1], prompts[1]) == (8 if first[1] != first[0] else 0)


def test_prefix_score_index_is_bounded_per_worker() -> None:
    policy = PrefixScore(capacity=4)
    policy._remember("a", (1, 2, 3))
    policy._remember("a", (4, 5, 6))
    assert policy.matched("a", (1, 2, 3)) == 0  # least recently sent went first
    assert policy.matched("a", (3, 4, 5, 6)) == 4


def test_prefix_affinity_keeps_the_key_when_every_kv_cache_is_full() -> None:
    # At saturation every worker's cache is full (vLLM admits until the blocks
    # run out): the key stays with its ring owner instead of being scattered.
    backends = [B(f"b{i}", kv_usage=0.99) for i in range(4)]
    policy = PrefixAffinity()
    owner = policy.owner(KEYS[2], backends)
    assert owner is not None
    assert {policy.choose(backends, KEYS[2]).name for _ in range(4)} == {owner.name}


# prefix-score on a prompt this router has not sent yet: the first of the
# key's two ring homes at or below the mean load, else the least loaded.
# Rows of (in-flight per worker, the workers some key picks; no other).
FIRST_SIGHT = [
    # Only one worker at or below the mean (4.75): it, whatever the key.
    ([5, 5, 5, 5, 5, 5, 5, 3], {"w7"}),
    # Mean 3.25: w4 when it is a home, else w0 (a home, or the least loaded).
    ([0, 4, 4, 4, 2, 4, 4, 4], {"w0", "w4"}),
]


@pytest.mark.parametrize(("loads", "allowed"), FIRST_SIGHT)
def test_prefix_score_sends_a_new_prompt_to_the_least_loaded(
    loads: list[int], allowed: set[str],
) -> None:
    backends = [B(f"w{i}", in_flight=n) for i, n in enumerate(loads)]
    chosen = set()
    for k in KEYS[:40]:
        policy = PrefixScore()
        chosen.add(policy.choose(backends, k, (k, k + 1)).name)
    assert chosen == allowed  # every allowed one is some key's pick


def test_prefix_score_new_prompts_at_equal_load_go_to_their_first_home() -> None:
    """Idle workers (a new router, a second replica, a restart): a new prompt
    goes to its key's first ring home in every replica, whatever order the
    replica's table lists the workers in; the next request keeps it there."""
    backends = [B(f"w{i}") for i in range(8)]
    one, two = PrefixScore(), PrefixScore()
    one.set_members([b.name for b in backends])
    two.set_members([b.name for b in reversed(backends)])
    for k in KEYS[:50]:
        blocks = (k, k + 1)
        home = one.homes(k, backends)[0].name
        assert one.choose(backends, k, blocks).name == home
        assert two.choose(backends, k, blocks).name == home
        assert one.known(blocks)
        assert one.choose(backends, k, blocks).name == home  # prefix score: stays


def test_prefix_score_balances_unique_prompts_like_least_loaded() -> None:
    """Unique prompts (nothing shared): no worker above the mean load takes
    one, where two homes would let a worker reach the load bound (2 x the
    mean)."""
    backends = [B(f"w{i}") for i in range(8)]
    policy = PrefixScore()
    for i, k in enumerate(KEYS):
        mean = sum(b.in_flight for b in backends) / len(backends)
        chosen = policy.choose(backends, k, (k,))
        assert chosen.in_flight <= mean
        chosen.in_flight += 1
        if i % 3 == 2:  # some finish, on a fixed worker
            done = backends[i % 8]
            done.in_flight = max(done.in_flight - 1, 0)


def test_pool_counts_an_attempts_prefill_until_its_first_byte_or_its_end() -> None:
    """What `Pool.pick` reserves for an attempt under prefix-score is the
    prefill that worker still has to do for it: the whole prompt when this
    router never sent it, only the new blocks after; freed once by
    `prefill_done` (first byte) and not again by `release`."""
    pool = Pool()
    pool.apply(table(["w0", "w1", "w2"], strategy="prefix-score"))
    prompt = tuple(stable_hash(f"block-{i}".encode()) for i in range(8))
    first, _ = pool.pick(None, (), prompt, owner=1)
    assert first is not None
    assert first.prefill_pending == 8
    assert first.prefill == {1: 8}
    longer = (*prompt, stable_hash(b"turn-2"), stable_hash(b"turn-2b"))
    second, _ = pool.pick(None, (), longer, owner=2)  # its 8 blocks are ahead there: 8 + 2 x 2
    assert second is first  # against 0 + 2 x 10 on the other home
    assert first.prefill_pending == 10
    assert first.prefill == {1: 8, 2: 2}
    first.prefill_done(1)
    assert first.prefill_pending == 2
    pool.release(first, 1)  # its first byte came already: nothing more to free
    pool.release(first, 2)
    assert first.prefill_pending == 0
    assert first.prefill == {}
    assert first.in_flight == 0
    other, _ = pool.pick(None, (), longer)  # no owner (nobody to free it): nothing counted
    assert other is first
    assert first.prefill_pending == 0
    pool.release(first)


async def test_a_queued_attempt_reserves_its_prefill_when_placed() -> None:
    pool = Pool()
    pool.apply(table(["w0"], strategy="prefix-score", maxConcurrency=1))
    prompt = tuple(stable_hash(f"q-{i}".encode()) for i in range(5))
    busy, full = pool.pick(None, (), prompt, owner=1)
    assert busy is not None
    assert not full
    assert busy.prefill == {1: 5}
    longer = (*prompt, stable_hash(b"q-5"), stable_hash(b"q-6"))
    waiting = asyncio.ensure_future(pool.wait_for_slot(None, (), 5.0, longer, owner=2))

    async def queued() -> bool:
        return pool.queue_length == 1

    await async_wait_for(queued, 5.0, what="the attempt to queue")
    assert busy.prefill == {1: 5}  # nothing reserved while it waits
    pool.release(busy, 1)
    placed = await waiting
    assert placed is busy
    assert placed.prefill == {2: 2}
    assert placed.prefill_pending == 2
    pool.release(placed, 2)
    assert placed.prefill_pending == 0
    assert placed.in_flight == 0
