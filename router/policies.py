"""Balancing policies: pure decisions over plain data.

Every policy answers one question, ``choose(candidates, key)``: which of
these backends (all healthy, not draining, with a free slot; never empty)
gets the next request? They hold only their own bookkeeping (a counter,
smooth-weighted-round-robin credits, a hash ring), never the network, so
they are tested with stand-in backends and exact expected sequences.

Canary traffic is split *before* a policy runs: `RevisionSplitter` picks
the revision, then that revision's policy picks the backend.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Protocol, TypeVar

from kubeinfer.operator.api.spec import Strategy


class Candidate(Protocol):
    """What a policy may look at; `BackendState` and test stand-ins both fit."""

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def queue_depth(self) -> int | None: ...
    @property
    def engine_running(self) -> int | None: ...
    @property
    def kv_usage(self) -> float | None: ...
    @property
    def prefill_pending(self) -> int:
        """Prompt blocks this router sent to the worker that it has not
        answered with a first byte yet: the prefill still ahead there, as
        `PrefixScore.place` estimated it (0 under other strategies)."""


C = TypeVar("C", bound=Candidate)


class Policy(Protocol):
    def choose(self, candidates: Sequence[C], key: int | None, blocks: Sequence[int] = ()) -> C:
        """Pick one of ``candidates`` (never empty). ``key`` is an affinity hash
        or None; ``blocks`` the prompt's chained block hashes (`prefix_blocks`),
        read only by `PrefixScore`."""
        ...


# A worker whose KV cache is this full would have to evict (or preempt) to
# take another sequence: prefix affinity passes it over like an overloaded one.
KV_FULL = 0.95


def requests_on(c: Candidate) -> int:
    """How many requests a worker holds: the engine's own last count
    (``vllm:num_requests_running`` + ``vllm:num_requests_waiting``, which
    includes other router replicas' requests) or this router's requests in
    flight there (always current), whichever is larger.

    Not their sum: this router's requests are in the engine's count too, so
    adding the two counted every waiting request twice and made a worker
    with a queue look twice as busy as it is.
    """
    engine = (c.engine_running or 0) + (c.queue_depth or 0)
    return max(c.in_flight, engine)


def load_of(c: Candidate) -> tuple[int, int, float]:
    """How busy a backend is, compared in order: requests in flight from this
    router; the queue the worker itself reports (``vllm:num_requests_waiting``,
    which also counts other routers' requests); its KV-cache usage
    (``vllm:kv_cache_usage_perc``: the emptier cache takes new prompts without
    evicting what others may reuse)."""
    return c.in_flight, c.queue_depth or 0, c.kv_usage or 0.0


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that is the same in every process and every router replica.

    Python's ``hash()`` is salted per process, which would send one session to
    different workers depending on which router process took the request.
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class RoundRobin:
    """Each candidate in turn."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[C], key: int | None, blocks: Sequence[int] = ()) -> C:
        i = self._next % len(candidates)
        self._next = i + 1
        return candidates[i]


class LeastLoaded:
    """The lowest `load_of` (in flight, then the worker's queue, then its KV
    usage); equal backends take turns so that they share evenly."""

    def __init__(self) -> None:
        self._start = 0

    def choose(self, candidates: Sequence[C], key: int | None, blocks: Sequence[int] = ()) -> C:
        n = len(candidates)
        start = self._start % n
        self._start = start + 1
        best = candidates[start]
        best_load = load_of(best)
        for i in range(1, n):
            c = candidates[(start + i) % n]
            load = load_of(c)
            if load < best_load:
                best, best_load = c, load
        return best


class SmoothWeighted:
    """nginx's smooth weighted round robin: exact over every window of
    ``sum(weights)`` picks, and interleaved (5:1:1 gives a a b a c a a, not
    a a a a a b c). Credits are kept by name so that a backend leaving and
    coming back (ejection, slots) does not reset everyone else."""

    def __init__(self) -> None:
        self._credit: dict[str, int] = {}

    def choose(self, candidates: Sequence[C], key: int | None, blocks: Sequence[int] = ()) -> C:
        total = 0
        best: C | None = None
        best_credit = 0
        credit = self._credit
        for c in candidates:
            w = c.weight
            total += w
            cur = credit.get(c.name, 0) + w
            credit[c.name] = cur
            if best is None or cur > best_credit:
                best, best_credit = c, cur
        assert best is not None
        credit[best.name] = best_credit - total
        if len(credit) > 4 * len(candidates) + 64:
            # Names of backends long gone; forget them.
            keep = {c.name for c in candidates}
            self._credit = {k: v for k, v in credit.items() if k in keep}
        return best


class PrefixAffinity:
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam).

    The same key (prompt prefix, ``user``, ``x-session-id``) goes to the same
    backend, so its KV cache is reused; but no backend takes more than
    ``load_factor`` times the average load: a hot key spills to the next
    backend on the ring instead of creating a hot spot. A backend's load is
    `requests_on` it: this router's requests in flight or the running +
    waiting count the worker reports, whichever is larger (so the bound
    holds across router replicas); a backend whose KV cache is full is passed
    over for the next one under the bound that is not (if every one is full,
    the first under the bound takes it). Requests without a key are balanced
    by least load.

    The ring is a pure function of the routing table's backend names
    (`set_members`, called on every table), never of what this process has
    seen: every router replica, and a restarted one, sends a key to the same
    worker, so no replica scatters a prefix over the caches.
    """

    VNODES = 64

    def __init__(self, load_factor: float = 2.0) -> None:
        self.load_factor = load_factor
        self._table_members: tuple[str, ...] = ()
        self._ring_of: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []
        self._fallback = LeastLoaded()

    def set_members(self, names: Sequence[str]) -> None:
        """The routing table's backends for this policy (healthy or not)."""
        self._table_members = tuple(sorted(set(names)))

    def _ring(self, candidates: Sequence[Candidate]) -> None:
        # Without a table (tests, a policy used alone) the candidates are the members.
        members = self._table_members or tuple(sorted({c.name for c in candidates}))
        if members == self._ring_of:
            return
        ring = sorted(
            (stable_hash(f"{name}#{i}".encode()), name) for name in members
            for i in range(self.VNODES)
        )
        self._ring_of = members
        self._points = [p for p, _ in ring]
        self._owners = [o for _, o in ring]

    def owner(self, key: int, candidates: Sequence[C]) -> C | None:
        """The first candidate on the ring at ``key``, ignoring load."""
        self._ring(candidates)
        by_name = {c.name: c for c in candidates}
        for i in self._walk(key):
            c = by_name.get(self._owners[i])
            if c is not None:
                return c
        return None

    def homes(self, key: int, candidates: Sequence[C], count: int) -> list[C]:
        """The first ``count`` members on the ring at ``key`` that are
        candidates and under the load bound (fewer, or none, when they are
        not); the ring ignores who is a candidate, so that a worker's absence
        moves only its own keys."""
        self._ring(candidates)
        by_name = {c.name: c for c in candidates}
        loads = {c.name: requests_on(c) for c in candidates}
        bound = self._bound(loads.values())
        out: list[C] = []
        seen: set[str] = set()
        looked = 0  # candidates met on the ring, under the bound or not
        for i in self._walk(key):
            owner = self._owners[i]
            if owner in seen:
                continue
            seen.add(owner)
            c = by_name.get(owner)
            if c is not None:
                looked += 1
                if loads[owner] < bound:
                    out.append(c)
            if looked >= count or len(seen) >= len(self._ring_of):
                break
        return out

    def in_ring_order(self, key: int, candidates: Sequence[C]) -> list[C]:
        """``candidates`` in the order the ring walk from ``key`` meets them."""
        self._ring(candidates)
        by_name = {c.name: c for c in candidates}
        out: list[C] = []
        seen: set[str] = set()
        for i in self._walk(key):
            owner = self._owners[i]
            if owner not in seen:
                seen.add(owner)
                c = by_name.get(owner)
                if c is not None:
                    out.append(c)
                if len(seen) >= len(self._ring_of):
                    break
        return out

    def under_bound(self, candidates: Sequence[C]) -> list[C]:
        """The candidates whose load is under ``load_factor`` x the mean."""
        loads = [requests_on(c) for c in candidates]
        bound = self._bound(loads)
        return [c for c, load in zip(candidates, loads, strict=True) if load < bound]

    def _bound(self, loads: Collection[int]) -> int:
        """The load a candidate must stay under: ``load_factor`` x the mean,
        counting the request being placed."""
        return math.ceil(self.load_factor * (sum(loads) + 1) / len(loads))

    def _walk(self, key: int) -> Iterator[int]:
        size = len(self._points)
        start = bisect.bisect_left(self._points, key)
        for i in range(size):
            yield (start + i) % size

    def choose(self, candidates: Sequence[C], key: int | None, blocks: Sequence[int] = ()) -> C:
        if key is None or len(candidates) == 1:
            return self._fallback.choose(candidates, key)
        self._ring(candidates)
        by_name = {c.name: c for c in candidates}
        loads = {c.name: requests_on(c) for c in candidates}
        bound = self._bound(loads.values())
        owners = self._owners
        seen: set[str] = set()
        members = len(self._ring_of)
        first_full: C | None = None
        for i in self._walk(key):
            owner = owners[i]
            if owner in seen:
                continue
            seen.add(owner)
            c = by_name.get(owner)
            if c is not None and loads[owner] < bound:
                if (c.kv_usage or 0.0) < KV_FULL:
                    return c
                first_full = first_full or c
            if len(seen) == members:
                break
        if first_full is not None:
            # Every worker under the bound has a full KV cache (normal at
            # saturation: vLLM admits requests until the blocks run out): keep
            # the key where the ring puts it rather than scatter it.
            return first_full
        # Every candidate at the bound: least loaded.
        return self._fallback.choose(candidates, key)


class PrefixScore:
    """Sends a prompt to whichever of its key's two homes on the hash ring
    would start it soonest, counting what a cache miss costs (after llm-d's
    prefix-cache and load scorers and Dynamo's KV router, in prompt blocks
    instead of normalised weights):

    - homes: the first two workers on `PrefixAffinity`'s ring at the key
      (the table's names only), so every router replica, and a restarted
      one, keeps a prefix on the same two workers; when both are at the
      bound (``load_factor`` x the mean load, as in `PrefixAffinity`) the
      workers under the bound are scored;
    - cost = prefill_pending + ``miss_cost`` x uncached, in prompt blocks
      (chained hashes of 256-character blocks, ``blocks``): the prefill
      this router has sent there and not yet seen a first byte for
      (`Candidate.prefill_pending`), plus the blocks of this prompt it
      would have to prefill, those this router has not sent there before
      (an LRU index per worker, llm-d's approximate prefix scorer: it cannot
      see evictions and knows only its own routing). A missed block counts
      ``miss_cost`` (2) times: once in this request's own wait, once in what
      its prefill evicts from that worker's cache for later requests.

    The lowest cost wins; a tie goes to the first home (ties among all
    workers rotate), whatever the homes' request counts: breaking ties by
    `requests_on` moved conversations between two homes that both held
    them and cost 0.03x round-robin's TTFT p90 beyond saturation
    (docs/benchmarks.md). KV-cache usage is not
    scored: at and beyond saturation every cache is full, and as a
    tie-breaker it would let two replicas disagree on a new prefix. A prompt
    whose first block this router has not sent anywhere yet is placed by
    `first_sight` instead: a home at or below the mean load, else the least
    loaded worker (unique prompts balance as with `LeastLoaded`). Why two
    homes and not every worker (llm-d's way), and why this cost, is measured
    in docs/benchmarks.md#routing-quality: with every worker scored, two
    router replicas learn different placements and a prefix ends up
    everywhere; a fixed exchange rate between prefix share and request
    count had to be stickier beyond saturation than just at it, while the
    prefill ahead grows with the load by itself.
    """

    # Cost of a prompt block the worker must prefill, against one block of
    # prefill already waiting there. Measured with bench/routing/run.py
    # (docs/benchmarks.md, fourth session): 2 is best beyond saturation;
    # 1.5 and 3 are as good just at it but worse beyond; 1 (too eager to
    # move a prompt off the worker holding it) and 4 are worse at both.
    MISS_COST = 2.0
    LRU_BLOCKS_PER_WORKER = 31_250  # llm-d's lruCapacityPerServer
    HOMES = 2

    def __init__(self, load_factor: float = 2.0, miss_cost: float = MISS_COST,
                 capacity: int = LRU_BLOCKS_PER_WORKER) -> None:
        self.miss_cost = miss_cost
        self.capacity = capacity
        self._ring = PrefixAffinity(load_factor)
        self._index: dict[str, OrderedDict[int, None]] = {}
        self._start = 0

    @property
    def load_factor(self) -> float:
        return self._ring.load_factor

    @load_factor.setter
    def load_factor(self, value: float) -> None:
        self._ring.load_factor = value

    def matched(self, name: str, blocks: Sequence[int]) -> int:
        """Leading ``blocks`` this router last sent to ``name`` (still in its LRU)."""
        seen = self._index.get(name)
        if not seen:
            return 0
        n = 0
        for b in blocks:
            if b not in seen:
                break
            n += 1
        return n

    def homes(self, key: int, candidates: Sequence[C]) -> list[C]:
        """The key's first `HOMES` workers on the ring among ``candidates``,
        those under the load bound; empty when all of them are at it."""
        return self._ring.homes(key, candidates, self.HOMES)

    def known(self, blocks: Sequence[int]) -> bool:
        """Whether this router has sent a prompt starting with ``blocks[0]``
        anywhere (still in some worker's LRU)."""
        return bool(blocks) and any(blocks[0] in seen for seen in self._index.values())

    def first_sight(self, key: int, candidates: Sequence[C]) -> C:
        """A prompt this router has never sent: the first of the key's two
        homes whose load is at most the mean, else the least loaded worker
        (ties in the key's ring order).

        Nothing is known to be cached for it, so no home is worth a queue
        (unique prompts balance like least-loaded); but a home that is not
        busier than average takes it, so that replicas and a restarted router
        put a new prefix where `choose` keeps it later, and at light load
        always do."""
        loads = {c.name: requests_on(c) for c in candidates}
        mean = sum(loads.values()) / len(candidates)
        for home in self._ring.homes(key, candidates, self.HOMES):
            if loads[home.name] <= mean:
                return home
        best: C | None = None
        for c in self._ring.in_ring_order(key, candidates):
            if best is None or load_of(c) < load_of(best):
                best = c
        assert best is not None
        return best

    def choose(self, candidates: Sequence[C], key: int | None, blocks: Sequence[int] = ()) -> C:
        return self.place(candidates, key, blocks)[0]

    def place(self, candidates: Sequence[C], key: int | None,
              blocks: Sequence[int] = ()) -> tuple[C, int]:
        """The worker for a prompt (remembered in the index) and how many of
        its ``blocks`` that worker is expected to prefill."""
        if key is None and blocks:
            key = blocks[0]
        if key is not None and len(candidates) > 1 and blocks and not self.known(blocks):
            best = self.first_sight(key, candidates)
            self._remember(best.name, blocks)
            return best, len(blocks)
        homes = self.homes(key, candidates) if key is not None and len(candidates) > 1 else []
        # Both homes at the bound: the others under it (a hot prefix spreads
        # instead of piling on the homes that hold it), else everyone.
        scored = homes or (self._ring.under_bound(candidates) if key is not None else []) \
            or candidates
        n = len(scored)
        if homes:
            # Ties go to the first home, so that replicas that have not seen
            # a prefix yet (or see equal loads) agree on one worker.
            start = 0
        else:
            start = self._start % n
            self._start = start + 1
        best, best_missed, best_cost = scored[start], len(blocks), math.inf
        for i in range(n):
            c = scored[(start + i) % n]
            missed = len(blocks) - self.matched(c.name, blocks)
            cost = c.prefill_pending + self.miss_cost * missed
            if cost < best_cost:
                best, best_missed, best_cost = c, missed, cost
        if blocks:
            self._remember(best.name, blocks)
        return best, best_missed

    def _remember(self, name: str, blocks: Sequence[int]) -> None:
        seen = self._index.setdefault(name, OrderedDict())
        for b in blocks:
            seen[b] = None
            seen.move_to_end(b)
        while len(seen) > self.capacity:
            seen.popitem(last=False)

    def set_members(self, names: Sequence[str]) -> None:
        """The routing table's backends: the ring's members; the index of
        workers no longer in the table is forgotten."""
        self._ring.set_members(names)
        keep = set(names)
        for name in [k for k in self._index if k not in keep]:
            del self._index[name]

def make_policy(strategy: Strategy, *, load_factor: float = 2.0) -> Policy:
    if strategy is Strategy.ROUND_ROBIN:
        return RoundRobin()
    if strategy is Strategy.LEAST_LOADED:
        return LeastLoaded()
    if strategy is Strategy.WEIGHTED:
        return SmoothWeighted()
    if strategy is Strategy.PREFIX_AFFINITY:
        return PrefixAffinity(load_factor)
    if strategy is Strategy.PREFIX_SCORE:
        return PrefixScore(load_factor)
    raise ValueError(f"unknown strategy {strategy!r}")


class RevisionSplitter:
    """Splits traffic between revisions by percent (the canary weight).

    Without a key it is smooth weighted round robin over the revisions, so
    10 % means exactly 10 of every 100 requests. With a key (prefix
    affinity) the key's hash picks the revision, so one session stays on one
    revision while the split over many keys still matches the weights.
    Only revisions passed in ``eligible`` (those with a healthy backend) take
    part: a canary without healthy workers hands its share to the others.
    """

    def __init__(self) -> None:
        self._credit: dict[str, int] = {}

    def choose(self, weights: Mapping[str, int], eligible: Sequence[str], key: int | None) -> str:
        if len(eligible) == 1:
            return eligible[0]
        if key is not None:
            total = sum(weights.get(r, 0) for r in eligible)
            point = key % total
            for r in eligible:
                point -= weights.get(r, 0)
                if point < 0:
                    return r
            return eligible[-1]
        total = 0
        best = eligible[0]
        best_credit: int | None = None
        for r in eligible:
            w = weights.get(r, 0)
            total += w
            cur = self._credit.get(r, 0) + w
            self._credit[r] = cur
            if best_credit is None or cur > best_credit:
                best, best_credit = r, cur
        assert best_credit is not None
        self._credit[best] = best_credit - total
        return best
