"""Canary analysis and the transition table."""

from typing import Any

import pytest
from kubeinfer.operator.analysis import RevisionCounters, judge_canary, parse_router_stats
from kubeinfer.operator.api import AnalysisSpec
from kubeinfer.operator.api.debugbackends import DebugBackends, GpuReport, worst
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.operator.api.status import RolloutPhase
from kubeinfer.operator.rollout import TRANSITIONS, Trigger, canary_pods
from kubeinfer.router.outcome import stream_outcome
from kubeinfer.router.pool import Pool
from kubeinfer.router.stats import render_debug
from pydantic import ValidationError

SPEC = AnalysisSpec(min_requests=20, max_error_rate=0.02, max_latency_ratio=1.5, max_ttft_ratio=2)
STABLE = RevisionCounters(1000, 1, 100.0, 40.0)


@pytest.mark.parametrize(
    ("canary", "baseline", "elapsed", "passed", "message"),
    [
        (
            RevisionCounters(10, 0, 90, 30),
            (0, 0),
            True,
            None,
            "waiting for 20 canary requests (have 10)",
        ),
        (
            RevisionCounters(110, 0, 90, 30),
            (100, 0),
            True,
            None,
            "waiting for 20 canary requests (have 10)",
        ),
        (
            RevisionCounters(50, 5, 90, 30),
            (0, 0),
            False,
            False,
            "canary error rate 10.0% > 2.0% (5/50 requests)",
        ),
        (
            RevisionCounters(150, 6, 90, 30),
            (100, 5),
            True,
            True,
            "error rate 2.0% over 50 requests, p99 latency 90 ms",
        ),
        (RevisionCounters(50, 0, 90, 30), (0, 0), False, None, "waiting for the step interval"),
        (
            RevisionCounters(50, 0, 200, 30),
            (0, 0),
            True,
            False,
            "canary p99 latency 200 ms is 2.0x stable's 100 ms (max 1.5x)",
        ),
        (
            RevisionCounters(50, 0, 100, 100),
            (0, 0),
            True,
            False,
            "canary p99 TTFT 100 ms is 2.5x stable's 40 ms (max 2x)",
        ),
        # A restarted router starts counting from 0: judged on what it has.
        (
            RevisionCounters(30, 0, 90, 30),
            (500, 2),
            True,
            True,
            "error rate 0.0% over 30 requests, p99 latency 90 ms",
        ),
    ],
)
def test_judge_canary(
    canary: RevisionCounters,
    baseline: tuple[int, int],
    elapsed: bool,
    passed: bool | None,
    message: str,
) -> None:
    verdict = judge_canary(
        analysis=SPEC,
        canary=canary,
        canary_baseline=baseline,
        stable=STABLE,
        interval_elapsed=elapsed,
    )
    assert (verdict.passed, verdict.message) == (passed, message)


def test_small_latencies_are_not_judged_as_ratios_of_noise() -> None:
    verdict = judge_canary(
        analysis=SPEC,
        canary=RevisionCounters(50, 0, 20.0, 5.0),
        canary_baseline=(0, 0),
        stable=RevisionCounters(500, 0, 4.0, 2.0),
        interval_elapsed=True,
    )
    assert verdict.passed is True


# How each canary stream ended, as the router judges it (router/outcome.py).
COMPLETE = {"broken": None, "aborted": False, "done": True}
KILLED = {"broken": "reset", "aborted": False, "done": False}  # SIGKILL mid-stream
STALLED = {"broken": "stall", "aborted": False, "done": False}
NO_DONE = {"broken": None, "aborted": False, "done": False}
ABORTED = {"broken": None, "aborted": True, "done": True}  # vLLM on SIGTERM


@pytest.mark.parametrize(
    ("ending", "passed"),
    [(COMPLETE, True), (KILLED, False), (STALLED, False), (NO_DONE, False), (ABORTED, False)],
    ids=["complete", "killed", "stalled", "no-done", "aborted"],
)
def test_a_canary_whose_streams_break_is_rolled_back(ending: dict[str, Any], passed: bool) -> None:
    """The router's own /debug/backends document, read as the operator reads it:
    streams that broke after their 200 head are canary errors."""
    pool = Pool()
    pool.apply(
        RoutingTable.model_validate(
            {
                "service": "svc",
                "model": "m",
                "revisionWeights": {"stable": 90, "canary": 10},
                "backends": [
                    {"name": "s0", "url": "http://127.0.0.1:9000", "revision": "stable"},
                    {"name": "c0", "url": "http://127.0.0.1:9001", "revision": "canary"},
                ],
            }
        )
    )
    stable, canary = pool.backends["s0"], pool.backends["c0"]
    now = 1000.0
    for i in range(200):
        pool.record_attempt(stable, "200", False, 0.5, 0.05, now)
        if i % 10 == 0:
            outcome = stream_outcome(**ending)
            pool.record_attempt(canary, outcome.label, outcome.failed, 0.5, 0.05, now)
    stats = parse_router_stats([render_debug(pool.snapshot(now, started=now - 60))])
    verdict = judge_canary(
        analysis=SPEC,
        canary=stats.revision("canary"),
        canary_baseline=(0, 0),
        stable=stats.revision("stable"),
        interval_elapsed=True,
    )
    assert verdict.passed is passed, verdict.message
    assert verdict.canary.errors == (0 if passed else 20)


def router_document(attempts: dict[str, list[tuple[bool, float]]], in_flight: dict[str, int]):  # type: ignore[no-untyped-def]
    """One router's /debug/backends, as the router renders it: ``attempts``
    per backend (failed, latency s) on revision "a", the backends' in-flight."""
    pool = Pool()
    pool.apply(
        RoutingTable.model_validate(
            {
                "service": "svc",
                "model": "m",
                "backends": [
                    {"name": n, "url": f"http://127.0.0.1:{9000 + i}", "revision": "a"}
                    for i, n in enumerate(sorted(attempts))
                ],
            }
        )
    )
    now = 1000.0
    for name, tries in attempts.items():
        backend = pool.backends[name]
        backend.in_flight = in_flight.get(name, 0)
        for failed, latency in tries:
            pool.record_attempt(backend, "500" if failed else "200", failed, latency, 0.005, now)
    return render_debug(pool.snapshot(now, started=now - 60))


def test_stats_of_several_routers_add_up() -> None:
    one = router_document({"pod-1": [(False, 0.03)] * 9 + [(True, 0.03)]}, {"pod-1": 2})
    two = router_document({"pod-1": [(False, 0.05)] * 5, "pod-2": []}, {"pod-1": 1, "pod-2": 0})
    stats = parse_router_stats([one, two])
    assert stats.routers == 2
    merged = stats.revision("a")
    assert (merged.requests, merged.errors) == (15, 1)
    # The worse router's p99 wins (log buckets: within 5 %).
    assert merged.p99_latency_ms == pytest.approx(50.0, rel=0.05)
    assert stats.in_flight == {"pod-1": 3, "pod-2": 0}
    assert stats.revision("missing") == RevisionCounters()


def test_a_router_of_another_version_is_refused_not_guessed() -> None:
    doc = router_document({"pod-1": [(False, 0.03)]}, {}).model_dump(mode="json", by_alias=True)
    assert DebugBackends.model_validate(doc).version == 1
    with pytest.raises(ValidationError, match="version"):
        DebugBackends.model_validate({**doc, "version": 2})


@pytest.mark.parametrize(
    ("replicas", "weight", "pods"),
    [
        (4, 10, 1),
        (4, 25, 1),
        (4, 50, 2),
        (4, 100, 4),
        (8, 10, 1),
        (8, 30, 3),
        (1, 10, 1),
        (0, 50, 0),
    ],
)
def test_canary_pods_are_whole_gpus(replicas: int, weight: int, pods: int) -> None:
    assert canary_pods(replicas, weight) == pods


def test_every_phase_has_a_way_out() -> None:
    sources = {before for before, _ in TRANSITIONS}
    assert set(RolloutPhase) <= sources | {RolloutPhase.IDLE}
    reachable = {after for after in TRANSITIONS.values()}
    assert set(RolloutPhase) == reachable
    for (before, trigger), after in TRANSITIONS.items():
        assert isinstance(trigger, Trigger)
        if trigger is Trigger.NEW_REVISION:
            assert after is RolloutPhase.PROGRESSING, before


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(None, None, None), (3.0, None, 3.0), (None, 4.5, 4.5), (3.0, 4.5, 4.5), (4.5, 3.0, 4.5)],
)
def test_worst_of_two_optional_figures(
    a: float | None, b: float | None, expected: float | None
) -> None:
    assert worst(a, b) == expected


@pytest.mark.parametrize(
    ("total", "used", "mib"),
    [
        (None, None, (None, None)),
        (80 * 1024**3, 1024**2 - 1, (81_920, 0)),  # rounded down
        (3 * 1024**2 + 5, 2 * 1024**2, (3, 2)),
    ],
)
def test_gpu_report_in_mib(total: int | None, used: int | None, mib: tuple[Any, Any]) -> None:
    report = GpuReport(memory_total_bytes=total, memory_used_bytes=used)
    assert (report.memory_mib, report.memory_used_mib) == mib
