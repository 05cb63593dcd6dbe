"""Canary analysis: the routers' per-revision stats in, a verdict out.

Every router replica serves part of the traffic, so the operator reads
``/debug/backends`` from each and adds them up: counters are summed,
percentiles take the worst router (a conservative choice: a canary that
is slow behind one router is slow).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from kubeinfer.operator.api.debugbackends import DebugBackends, GpuReport, worst
from kubeinfer.operator.api.spec import AnalysisSpec
from kubeinfer.operator.api.status import RevisionStats

# Below this, latency ratios are noise (1 ms vs 2 ms is "2x" but nobody
# cares): ratios are taken against at least this much.
LATENCY_FLOOR_MS = 25.0


@dataclass(frozen=True)
class RevisionCounters:
    requests: int = 0
    errors: int = 0
    p99_latency_ms: float | None = None
    p99_ttft_ms: float | None = None
    p90_ttft_ms: float | None = None
    window_requests: int = 0  # requests in the routers' sliding window


@dataclass(frozen=True)
class GpuFacts:
    """One worker's GPU as its agent reported it to the routers (NVML)."""

    uuid: str | None
    name: str | None
    memory_mib: int | None
    memory_used_mib: int | None
    healthy: bool
    fault: str | None

    @classmethod
    def from_report(cls, report: GpuReport) -> "GpuFacts":
        return cls(
            uuid=report.uuid,
            name=report.name,
            memory_mib=report.memory_mib,
            memory_used_mib=report.memory_used_mib,
            healthy=report.healthy,
            fault=report.fault,
        )


@dataclass(frozen=True)
class RouterStats:
    """Stats of all routers of one InferenceService, added up."""

    routers: int = 0
    revisions: dict[str, RevisionCounters] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)  # per backend (pod) name
    gpus: dict[str, GpuFacts] = field(default_factory=dict)  # per backend (pod) name
    queued: int = 0  # waiting in the routers' queues, held requests included
    idle_seconds: float | None = None  # since the last request reached any router
    arrivals: int = 0  # requests received, summed over routers (cumulative)

    def revision(self, revision: str | None) -> RevisionCounters:
        return self.revisions.get(revision or "", RevisionCounters())


def parse_router_stats(documents: Sequence[DebugBackends]) -> RouterStats:
    """Add up the ``/debug/backends`` documents of several routers."""
    revisions: dict[str, RevisionCounters] = {}
    in_flight: dict[str, int] = {}
    gpus: dict[str, GpuFacts] = {}
    queued = arrivals = 0
    idle: float | None = None
    for doc in documents:
        queued += doc.queue.length
        arrivals += doc.demand.arrivals
        if doc.demand.idle_seconds is not None:
            # Any router that saw a request recently makes the service busy.
            value = doc.demand.idle_seconds
            idle = value if idle is None else min(idle, value)
        for name, rev in doc.revisions.items():
            window = rev.window
            old = revisions.get(name, RevisionCounters())
            revisions[name] = RevisionCounters(
                requests=old.requests + rev.requests,
                errors=old.errors + rev.errors,
                p99_latency_ms=worst(old.p99_latency_ms, window.p99_latency_ms),
                p99_ttft_ms=worst(old.p99_ttft_ms, window.p99_ttft_ms),
                p90_ttft_ms=worst(old.p90_ttft_ms, window.p90_ttft_ms),
                window_requests=old.window_requests + window.requests,
            )
        for backend in doc.backends:
            in_flight[backend.name] = in_flight.get(backend.name, 0) + backend.in_flight
            if backend.gpu is not None and backend.name not in gpus:
                gpus[backend.name] = GpuFacts.from_report(backend.gpu)
    return RouterStats(
        routers=len(documents),
        revisions=revisions,
        in_flight=in_flight,
        queued=queued,
        idle_seconds=idle,
        arrivals=arrivals,
        gpus=gpus,
    )


@dataclass(frozen=True)
class Verdict:
    """``passed`` is None while there is not enough data to judge."""

    passed: bool | None
    message: str
    canary: RevisionStats
    stable: RevisionStats


def _stats(requests: int, errors: int, counters: RevisionCounters) -> RevisionStats:
    return RevisionStats(
        requests=requests,
        errors=errors,
        error_rate=round(errors / requests, 4) if requests else 0.0,
        p99_latency_ms=counters.p99_latency_ms,
        p99_ttft_ms=counters.p99_ttft_ms,
    )


def _ratio_problem(
    what: str, canary: float | None, stable: float | None, limit: float
) -> str | None:
    if canary is None or stable is None:
        return None
    ratio = canary / max(stable, LATENCY_FLOOR_MS)
    if ratio <= limit:
        return None
    return (
        f"canary p99 {what} {canary:.0f} ms is {ratio:.1f}x stable's {stable:.0f} ms "
        f"(max {limit:g}x)"
    )


def judge_canary(
    *,
    analysis: AnalysisSpec,
    canary: RevisionCounters,
    canary_baseline: tuple[int, int],
    stable: RevisionCounters,
    interval_elapsed: bool,
) -> Verdict:
    """Compare canary with stable for the current step.

    ``canary_baseline`` is (requests, errors) of the canary when the step
    started: the error rate is judged on this step's requests only. An error
    rate over the limit fails at once (no need to wait out the interval);
    everything else is judged once the interval has passed.
    """
    base_requests, base_errors = canary_baseline
    if canary.requests < base_requests:
        # A router restarted and its counters began again from zero.
        base_requests, base_errors = 0, 0
    requests = canary.requests - base_requests
    errors = max(0, canary.errors - base_errors)
    canary_stats = _stats(requests, errors, canary)
    stable_stats = _stats(stable.requests, stable.errors, stable)
    if requests < max(1, analysis.min_requests):
        return Verdict(
            None,
            f"waiting for {analysis.min_requests} canary requests (have {requests})",
            canary_stats,
            stable_stats,
        )
    rate = errors / requests
    if rate > analysis.max_error_rate:
        message = (
            f"canary error rate {rate:.1%} > {analysis.max_error_rate:.1%} "
            f"({errors}/{requests} requests)"
        )
        return Verdict(False, message, canary_stats, stable_stats)
    if not interval_elapsed:
        return Verdict(None, "waiting for the step interval", canary_stats, stable_stats)
    problems = [
        p
        for p in (
            _ratio_problem(
                "latency", canary.p99_latency_ms, stable.p99_latency_ms, analysis.max_latency_ratio
            ),
            _ratio_problem("TTFT", canary.p99_ttft_ms, stable.p99_ttft_ms, analysis.max_ttft_ratio),
        )
        if p
    ]
    if problems:
        return Verdict(False, "; ".join(problems), canary_stats, stable_stats)
    latency = canary.p99_latency_ms
    summary = f"error rate {rate:.1%} over {requests} requests" + (
        f", p99 latency {latency:.0f} ms" if latency is not None else ""
    )
    return Verdict(True, summary, canary_stats, stable_stats)
