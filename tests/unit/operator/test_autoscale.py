"""Autoscaling decisions (kubeinfer.operator.autoscale): tables of cases and
load scenarios stepped every intervalSeconds, as the reconciler does."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kubeinfer.operator.api import parse_spec
from kubeinfer.operator.api.spec import AutoscalingSpec
from kubeinfer.operator.autoscale import (
    Recommendation,
    ScaleDecision,
    ScaleInput,
    Signals,
    decide,
    recommend,
    signals_status,
)
from kubeinfer.operator.builders.routing import hold_seconds, queue_size


def spec(**fields: object) -> AutoscalingSpec:
    base: dict[str, object] = {
        "maxReplicas": 8,
        "minReplicas": 1,
        "targetInFlightPerReplica": 32,
        "scaleUpStabilizationSeconds": 9,
        "scaleDownStabilizationSeconds": 60,
        "intervalSeconds": 3,
    }
    return AutoscalingSpec.model_validate({**base, **fields})


def load(in_flight: int, queued: int = 0, idle: float | None = 0.0, **kw: object) -> Signals:
    return Signals(routers=1, in_flight=in_flight, queued=queued, idle_seconds=idle, **kw)  # type: ignore[arg-type]


# -- one recommendation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "current", "ready", "signals", "want", "signal"),
    [
        # in flight + queued over the target, rounded up
        ({}, 2, 2, load(64), 2, "InFlight"),
        ({}, 2, 2, load(65 + 10), 3, "InFlight"),
        ({}, 2, 2, load(200, 56), 8, "InFlight"),
        # within 10 % of the target: no change
        ({}, 4, 4, load(135), 4, "InFlight"),
        ({}, 4, 4, load(116), 4, "InFlight"),
        ({}, 4, 4, load(100), 4 - 0, "InFlight"),  # 100/128 = 0.78: ceil(100/32) = 4
        ({}, 4, 4, load(90), 3, "InFlight"),
        # never above maxReplicas, never below minReplicas
        ({}, 8, 8, load(1000), 8, "InFlight"),
        ({"minReplicas": 2}, 2, 2, load(0), 2, "InFlight"),
        # the queue target: one more worker per N waiting requests
        ({"targetQueuePerReplica": 5}, 2, 2, load(10, 12), 4, "Queue"),
        ({"targetQueuePerReplica": 5}, 2, 2, load(10, 4), 1, "InFlight"),
        # TTFT over the objective adds in proportion, and only with enough requests
        (
            {"ttftP90ObjectiveMs": 500},
            2,
            2,
            load(10, ttft_p90_ms=1000, ttft_requests=50),
            4,
            "TTFT",
        ),
        (
            {"ttftP90ObjectiveMs": 500},
            2,
            2,
            load(10, ttft_p90_ms=1000, ttft_requests=3),
            1,
            "InFlight",
        ),
        # TTFT under the objective does not ask for fewer than in flight does
        (
            {"ttftP90ObjectiveMs": 500},
            3,
            3,
            load(90, ttft_p90_ms=100, ttft_requests=50),
            3,
            "InFlight",
        ),
        # TTFT above it keeps what there is even when in flight asks for less
        ({"ttftP90ObjectiveMs": 500}, 3, 3, load(10, ttft_p90_ms=600, ttft_requests=50), 4, "TTFT"),
        # zero: only idle long enough and nothing in flight or waiting
        ({"minReplicas": 0, "scaleToZeroAfterSeconds": 60}, 1, 1, load(0, idle=61), 0, "Idle"),
        ({"minReplicas": 0, "scaleToZeroAfterSeconds": 60}, 1, 1, load(0, idle=30), 1, "InFlight"),
        (
            {"minReplicas": 0, "scaleToZeroAfterSeconds": 60},
            0,
            0,
            load(0, 1, idle=0),
            1,
            "InFlight",
        ),
        (
            {"minReplicas": 0, "scaleToZeroAfterSeconds": 60},
            0,
            0,
            load(0, 100, idle=0),
            4,
            "InFlight",
        ),
    ],
)
def test_recommendation(
    fields: dict[str, object], current: int, ready: int, signals: Signals, want: int, signal: str
) -> None:
    assert recommend(spec(**fields), current, ready, signals) == (want, signal)


# -- one decision -------------------------------------------------------------------------


def steady_history(replicas: int, now: float, seconds: int = 120) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(now - t, replicas) for t in range(seconds, 0, -3))


NOW = 1_000.0


@pytest.mark.parametrize(
    ("inp", "desired", "reason"),
    [
        # no router answered: hold, but still keep replicas inside the bounds
        (ScaleInput(spec(), 3, 3, None, NOW), 3, "NoSignals"),
        (ScaleInput(spec(), 12, 12, None, NOW), 8, "AboveMaxReplicas"),
        (ScaleInput(spec(minReplicas=2), 0, 0, None, NOW), 2, "BelowMinReplicas"),
        # `kubectl scale` past maxReplicas is clamped at once
        (ScaleInput(spec(), 12, 12, load(10), NOW, steady_history(12, NOW)), 8, "AboveMaxReplicas"),
        # the load asks for more, sustained over the window: up, at most maxStepUp
        (
            ScaleInput(spec(), 2, 2, load(256), NOW, steady_history(8, NOW, 12)),
            6,
            "InFlightAboveTarget",
        ),
        # ... but the window is not covered yet (fresh operator): wait
        (ScaleInput(spec(), 2, 2, load(256), NOW), 2, "StabilizingUp"),
        # a spike seen once in the window: wait
        (
            ScaleInput(spec(), 2, 2, load(256), NOW, steady_history(2, NOW, 12)),
            2,
            "StabilizingUp",
        ),
        # pods that cannot be scheduled: no more pending pods
        (
            ScaleInput(spec(), 4, 2, load(256), NOW, steady_history(8, NOW, 12), unschedulable=2),
            4,
            "InsufficientGPU",
        ),
        # down only after the whole down window asked for less, one pod per decision
        (
            ScaleInput(spec(), 6, 6, load(40), NOW, steady_history(2, NOW, 90)),
            5,
            "LoadBelowTarget",
        ),
        (
            ScaleInput(spec(maxStepDown=3), 6, 6, load(40), NOW, steady_history(2, NOW, 90)),
            3,
            "LoadBelowTarget",
        ),
        (
            ScaleInput(spec(), 6, 6, load(40), NOW, steady_history(2, NOW, 30)),
            6,
            "StabilizingDown",
        ),
        # no scale-down during a rollout, nor while pods are starting; up is fine
        (
            ScaleInput(spec(), 6, 6, load(40), NOW, steady_history(2, NOW), rollout_active=True),
            6,
            "RolloutInProgress",
        ),
        (
            ScaleInput(spec(), 2, 2, load(256), NOW, steady_history(8, NOW), rollout_active=True),
            6,
            "InFlightAboveTarget",
        ),
        (
            ScaleInput(spec(), 6, 4, load(40), NOW, steady_history(2, NOW), starting=2),
            6,
            "ReplicasStarting",
        ),
        # a held request at zero brings the first worker at once, no window
        (
            ScaleInput(spec(minReplicas=0, scaleToZeroAfterSeconds=60), 0, 0, load(0, 1), NOW),
            1,
            "ScaleFromZero",
        ),
        # idle: down to zero, still one step at a time
        (
            ScaleInput(
                spec(minReplicas=0, scaleToZeroAfterSeconds=60),
                1,
                1,
                load(0, idle=100),
                NOW,
                steady_history(0, NOW),
            ),
            0,
            "Idle",
        ),
        (ScaleInput(spec(), 3, 3, load(96), NOW, steady_history(3, NOW)), 3, "Steady"),
    ],
)
def test_decision(inp: ScaleInput, desired: int, reason: str) -> None:
    decision = decide(inp)
    assert (decision.desired, decision.reason) == (desired, reason), decision.message
    if inp.signals is None:
        assert decision.history == inp.history  # nothing measured, nothing recorded
    else:
        assert decision.history[-1].at == inp.now


def test_history_keeps_only_what_the_windows_need() -> None:
    old = steady_history(2, NOW, 600)
    decision = decide(ScaleInput(spec(), 2, 2, load(64), NOW, old))
    ages = [NOW - r.at for r in decision.history]
    # the longer window is 60 s; one older entry shows it is covered
    assert max(ages) <= 63
    assert sum(1 for a in ages if a > 60) == 1


# -- scenarios: a load over time, one evaluation every interval ---------------------------


@dataclass
class Run:
    replicas: list[int]  # after each evaluation
    decisions: list[tuple[float, ScaleDecision]]


def simulate(
    s: AutoscalingSpec,
    load_at: Callable[[float], Signals],
    seconds: float,
    start: int,
    *,
    gpus: int = 1024,
    rollout_between: tuple[float, float] = (-1.0, -1.0),
) -> Run:
    """Every interval: observe the load, decide, apply. New pods are ready at
    the next evaluation unless there are more than ``gpus`` of them."""
    now, current, history = 0.0, start, ()
    run = Run([], [])
    while now <= seconds:
        ready = min(current, gpus)
        decision = decide(
            ScaleInput(
                s,
                current,
                ready,
                load_at(now),
                now,
                history,
                rollout_active=rollout_between[0] <= now < rollout_between[1],
                unschedulable=max(0, current - gpus),
            )
        )
        history = decision.history
        if decision.changed(current):
            run.decisions.append((now, decision))
            current = decision.desired
        run.replicas.append(current)
        now += s.interval_seconds
    return run


def test_steady_load_changes_nothing() -> None:
    run = simulate(spec(), lambda t: load(64 + (t % 7 > 3)), 600, start=2)
    assert run.decisions == []


def test_a_4x_spike_is_followed_within_15_seconds() -> None:
    run = simulate(spec(), lambda t: load(64 if t < 30 else 256), 120, start=2)
    times = [t for t, _ in run.decisions]
    assert times, "no decision"
    assert 30 < times[0] <= 30 + 15
    assert run.replicas[-1] == 8
    assert max(run.replicas) == 8
    # 2 -> 6 -> 8: two decisions, each within maxStepUp
    assert [d.desired for _, d in run.decisions] == [6, 8]


def test_a_slow_ramp_only_goes_up() -> None:
    run = simulate(spec(), lambda t: load(min(int(t), 256)), 290, start=1)
    assert all(b >= a for a, b in zip(run.replicas, run.replicas[1:], strict=False))
    assert run.replicas[-1] == 8  # 256 in flight / 32
    # a ramp of 1 request/s is followed a worker or two at a time, not in jumps
    steps = [
        b - a
        for a, b in zip(
            [1, *(d.desired for _, d in run.decisions)],
            [d.desired for _, d in run.decisions],
            strict=False,
        )
    ]
    assert steps
    assert max(steps) <= 2, steps


def test_a_noisy_signal_does_not_scale() -> None:
    # one sample in ten is five times the load: never sustained over the window
    run = simulate(spec(), lambda t: load(320 if int(t / 3) % 10 == 0 else 64), 600, start=2)
    assert run.decisions == []


def test_flapping_load_keeps_its_peak() -> None:
    # 30 s at 4x, 30 s at 1x, for 10 minutes: one scale-up, no flapping
    run = simulate(spec(), lambda t: load(256 if int(t / 30) % 2 == 0 else 64), 600, start=8)
    assert run.decisions == []
    run = simulate(spec(), lambda t: load(256 if int(t / 30) % 2 == 1 else 64), 600, start=2)
    assert len(run.decisions) <= 2
    assert run.replicas[-1] == 8


def test_load_gone_scales_down_after_the_window_one_step_at_a_time() -> None:
    run = simulate(spec(), lambda t: load(256 if t < 30 else 32), 240, start=8)
    downs = [(t, d.desired) for t, d in run.decisions]
    assert downs[0][0] >= 30 + 60  # the scale-down window
    assert [r for _, r in downs] == [7, 6, 5, 4, 3, 2, 1]


def test_idle_goes_to_zero_and_a_request_brings_it_back() -> None:
    s = spec(minReplicas=0, scaleToZeroAfterSeconds=30, scaleDownStabilizationSeconds=10)

    def demand(t: float) -> Signals:
        if t < 20:
            return load(10, idle=0)
        if t < 120:
            return load(0, idle=t - 20)
        return load(0, queued=1, idle=0)  # one request, held by the router

    run = simulate(s, demand, 126, start=1)
    (t_zero, zero), (t_back, back) = run.decisions
    assert (zero.desired, zero.reason) == (0, "Idle")
    assert 50 <= t_zero <= 50 + 10 + 3
    assert (back.desired, back.reason) == (1, "ScaleFromZero")
    assert t_back == 120  # the first evaluation that sees it


def test_no_gpus_left_holds_instead_of_piling_up_pending_pods() -> None:
    run = simulate(spec(), lambda t: load(256), 120, start=2, gpus=4)
    # 2 -> 6 (4 of them schedulable), then held: no more pending pods
    assert [d.desired for _, d in run.decisions] == [6]
    assert run.replicas[-1] == 6


def test_during_a_canary_up_is_allowed_and_down_waits() -> None:
    run = simulate(
        spec(),
        lambda t: load(256 if t < 60 else 32),
        300,
        start=2,
        rollout_between=(0, 200),
    )
    ups = [t for t, d in run.decisions if d.desired > 2 and t < 60]
    downs = [t for t, d in run.decisions if d.reason == "LoadBelowTarget"]
    assert ups
    assert downs
    assert min(downs) >= 200


# -- the routers' hold (scale from zero) --------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "hold"),
    [
        ({}, 10.0),  # no autoscaling: long enough for a crashed worker's restart
        ({"routing": {"requestTimeoutSeconds": 5}}, 5.0),
        ({"autoscaling": {"maxReplicas": 2}}, 300.0 + 30 * 1),  # the load budget of a 1 GiB model
        ({"autoscaling": {"maxReplicas": 2}, "routing": {"holdTimeoutSeconds": 45}}, 45.0),
        # KEDA or an HPA scaling from zero: a hold without spec.autoscaling
        ({"routing": {"holdTimeoutSeconds": 120}}, 120.0),
        ({"autoscaling": {"maxReplicas": 2}, "routing": {"holdTimeoutSeconds": 0}}, 0.0),
        (
            {"autoscaling": {"maxReplicas": 2}, "routing": {"requestTimeoutSeconds": 120}},
            120.0,
        ),
        (
            {"autoscaling": {"maxReplicas": 2}, "worker": {"loadTimeoutSeconds": 90}},
            90.0,
        ),
    ],
)
def test_hold_defaults_to_what_a_model_load_needs(extra: dict[str, object], hold: float) -> None:
    spec = parse_spec(
        {"model": {"name": "m", "source": "org/m", "vramGiB": 1}, **extra}  # type: ignore[dict-item]
    )
    assert hold_seconds(spec) == hold


@pytest.mark.parametrize(
    ("extra", "size"),
    [
        ({}, 256),
        # A spike's excess waits while new workers start (bench/autoscaling).
        ({"autoscaling": {"maxReplicas": 4}}, 1024),
        ({"autoscaling": {"maxReplicas": 4}, "routing": {"queueSize": 64}}, 64),
        ({"routing": {"queueSize": 0}}, 0),
    ],
)
def test_the_queue_is_larger_by_default_with_autoscaling(
    extra: dict[str, object], size: int
) -> None:
    spec = parse_spec({"model": {"name": "m", "source": "org/m"}, **extra})  # type: ignore[dict-item]
    assert queue_size(spec) == size


def test_status_shows_idle_time_coarsely_so_an_idle_service_is_not_rewritten() -> None:
    shown = [
        signals_status(load(0, idle=idle), 1).idle_seconds  # type: ignore[union-attr]
        for idle in (3.0, 9.9, 12.0, 59.0, 61.0, 119.0, 3_600.5)
    ]
    assert shown == [0, 0, 10, 50, 60, 60, 3_600]
    assert signals_status(None, 0) is None
    assert signals_status(load(8, 4), 3).per_replica == 4.0  # type: ignore[union-attr]
