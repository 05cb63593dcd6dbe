"""Autoscaling decisions (pure): the routers' signals in, replicas out.

``decide`` is called once per evaluation (every ``intervalSeconds``) with
what the reconciler observed; it returns the replicas to set and why. It
follows the HorizontalPodAutoscaler's rules, on LLM signals:

1. one recommendation per signal, the largest wins: requests in flight plus
   waiting per worker (``ceil(total / target)``, 10 % tolerance), one more
   worker per ``targetQueuePerReplica`` waiting requests, and TTFT p90 over
   its objective (``ceil(ready * p90 / objective)``);
2. ``minReplicas: 0`` allows 0 only after ``scaleToZeroAfterSeconds``
   without any request; a waiting request brings the first worker back
   at once (no window: it is being held by a router);
3. stabilisation windows: GPUs are added only up to the *lowest*
   recommendation of the scale-up window and removed only down to the
   *highest* of the scale-down window, so a short spike or dip changes
   nothing and a flapping load keeps its peak;
4. at most ``maxStepUp`` / ``maxStepDown`` pods per decision;
5. guards: no scale-up while pods cannot be scheduled (InsufficientGPU:
   adding pending pods helps nobody), no scale-down during a rollout or
   while pods are still starting.

The recommendation history lives in the operator's memory, like the HPA's:
after a restart the windows start again, which only delays a change.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from kubeinfer.operator.api.spec import AutoscalingSpec
from kubeinfer.operator.api.status import AutoscalingSignals

# Within this fraction of the target, the in-flight signal asks for no change.
TOLERANCE = 0.1
# TTFT p90 of fewer requests than this is noise: it neither adds nor blocks.
TTFT_MIN_REQUESTS = 10


@dataclass(frozen=True)
class Signals:
    """The routers' load, added up over every router that answered."""

    routers: int
    in_flight: int  # attempts in flight to workers
    queued: int  # waiting in the routers' queues (held requests included)
    idle_seconds: float | None  # since the last request reached any router
    ttft_p90_ms: float | None = None
    ttft_requests: int = 0  # requests behind ttft_p90_ms


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleInput:
    """Everything one evaluation looks at, already observed."""

    spec: AutoscalingSpec
    current: int  # spec.replicas now
    ready: int  # workers in rotation
    signals: Signals | None  # None: no router answered
    now: float
    history: tuple[Recommendation, ...] = ()
    rollout_active: bool = False  # a canary, promotion or rollback is under way
    unschedulable: int = 0  # worker pods the scheduler cannot place
    starting: int = 0  # worker pods placed but not ready yet


@dataclass(frozen=True)
class ScaleDecision:
    desired: int  # what spec.replicas should be
    recommendation: int  # what the signals ask for, before windows and limits
    reason: str  # CamelCase
    message: str
    history: tuple[Recommendation, ...] = field(default=())

    def changed(self, current: int) -> bool:
        return self.desired != current


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def recommend(spec: AutoscalingSpec, current: int, ready: int, s: Signals) -> tuple[int, str]:
    """Replicas the signals ask for right now, clamped to [min, max], and the signal that
    decided it."""
    load = s.in_flight + s.queued
    by_in_flight = _ceil_div(load, spec.target_in_flight_per_replica)
    if current > 0 and load > 0:
        ratio = load / (spec.target_in_flight_per_replica * current)
        if abs(ratio - 1.0) <= TOLERANCE:
            by_in_flight = current
    candidates = [(by_in_flight, "InFlight")]
    if spec.target_queue_per_replica is not None and s.queued >= spec.target_queue_per_replica:
        candidates.append((ready + s.queued // spec.target_queue_per_replica, "Queue"))
    objective = spec.ttft_p90_objective_ms
    if (
        objective is not None
        and s.ttft_p90_ms is not None
        and s.ttft_requests >= TTFT_MIN_REQUESTS
        and s.ttft_p90_ms > objective
    ):
        # TTFT only ever adds: while it is above the objective, keep what we have.
        by_ttft = math.ceil(max(ready, 1) * s.ttft_p90_ms / objective)
        candidates.append((max(current, by_ttft), "TTFT"))
    replicas, signal = max(candidates, key=lambda c: c[0])
    if spec.min_replicas == 0:
        idle_for = spec.scale_to_zero_after_seconds or 0
        idle = s.idle_seconds is not None and s.idle_seconds >= idle_for
        if load == 0 and idle:
            return 0, "Idle"
        replicas = max(replicas, 1)
    return max(spec.min_replicas, min(spec.max_replicas, replicas)), signal


def _keep(
    history: tuple[Recommendation, ...], now: float, spec: AutoscalingSpec
) -> tuple[Recommendation, ...]:
    """The recommendations the windows need: those inside the longer window,
    and the newest one before it (it shows the window is covered)."""
    longest = max(spec.scale_up_stabilization_seconds, spec.scale_down_stabilization_seconds)
    inside = tuple(r for r in history if now - r.at <= longest)
    before = [r for r in history if now - r.at > longest]
    return (before[-1], *inside) if before else inside


def _window(
    history: tuple[Recommendation, ...],
    now: float,
    seconds: int,
    current: int,
    pick: Callable[[list[int]], int],
) -> int:
    values = [r.replicas for r in history if now - r.at <= seconds]
    covered = any(now - r.at >= seconds for r in history)
    if not covered:
        values.append(current)
    return pick(values)


def _describe(s: Signals, ready: int) -> str:
    parts = [f"in flight {s.in_flight}", f"queued {s.queued}", f"ready {ready}"]
    if s.ttft_p90_ms is not None:
        parts.append(f"TTFT p90 {s.ttft_p90_ms:.0f} ms")
    if s.idle_seconds is not None:
        parts.append(f"idle {s.idle_seconds:.0f} s")
    return ", ".join(parts)


_UP_REASONS = {
    "InFlight": "InFlightAboveTarget",
    "Queue": "QueueAboveTarget",
    "TTFT": "TTFTAboveObjective",
}


def decide(inp: ScaleInput) -> ScaleDecision:
    """One autoscaling evaluation (see the module docstring for the rules)."""
    spec, current, now = inp.spec, inp.current, inp.now
    lo, hi = spec.min_replicas, spec.max_replicas
    if inp.signals is None:
        clamped = max(lo, min(hi, current))
        if clamped != current:
            reason = "BelowMinReplicas" if clamped > current else "AboveMaxReplicas"
            return ScaleDecision(
                clamped, clamped, reason, f"replicas {current} outside [{lo}, {hi}]", inp.history
            )
        return ScaleDecision(
            current, current, "NoSignals", "no router answered: holding replicas", inp.history
        )
    s = inp.signals
    raw, signal = recommend(spec, current, inp.ready, s)
    history = (*_keep(inp.history, now, spec), Recommendation(now, raw))
    # A window decides only once the history covers it (after an operator
    # restart, nothing changes until it does), except that a request held
    # at zero replicas brings the first worker at once.
    held = s.queued > 0 and current == 0
    up_window = spec.scale_up_stabilization_seconds
    up_to = raw if held else _window(history, now, up_window, current, min)
    down_to = _window(history, now, spec.scale_down_stabilization_seconds, current, max)
    desired = current
    if desired < up_to:
        desired = up_to
    if desired > down_to:
        desired = down_to
    desired = max(current - spec.max_step_down, min(current + spec.max_step_up, desired))
    desired = max(lo, min(hi, desired))
    values = _describe(s, inp.ready)
    if current < lo or current > hi:
        reason = "BelowMinReplicas" if current < lo else "AboveMaxReplicas"
        message = f"replicas {current} outside [{lo}, {hi}]; {values}"
        return ScaleDecision(desired, raw, reason, message, history)
    if desired > current:
        if inp.unschedulable > 0:
            message = (
                f"want {desired} but {inp.unschedulable} worker pods cannot be scheduled; "
                f"holding {current}; {values}"
            )
            return ScaleDecision(current, raw, "InsufficientGPU", message, history)
        reason = "ScaleFromZero" if current == 0 else _UP_REASONS[signal]
        return ScaleDecision(desired, raw, reason, f"{current} -> {desired}: {values}", history)
    if desired < current:
        if inp.rollout_active:
            message = f"want {desired}; no scale-down while a rollout runs; {values}"
            return ScaleDecision(current, raw, "RolloutInProgress", message, history)
        if inp.starting > 0:
            message = f"want {desired}; {inp.starting} worker pods still starting; {values}"
            return ScaleDecision(current, raw, "ReplicasStarting", message, history)
        reason = "Idle" if desired == 0 else "LoadBelowTarget"
        return ScaleDecision(desired, raw, reason, f"{current} -> {desired}: {values}", history)
    if raw > current:
        reason = "StabilizingUp"
        why = f"want {raw} once it holds {spec.scale_up_stabilization_seconds} s"
    elif raw < current:
        reason = "StabilizingDown"
        why = f"want {raw} once it holds {spec.scale_down_stabilization_seconds} s"
    else:
        reason, why = "Steady", f"{current} replicas fit the load"
    return ScaleDecision(current, raw, reason, f"{why}; {values}", history)


def signals_status(s: Signals | None, ready: int) -> AutoscalingSignals | None:
    """The signals as status shows them."""
    if s is None:
        return None
    load = s.in_flight + s.queued
    return AutoscalingSignals(
        routers=s.routers,
        in_flight=s.in_flight,
        queued=s.queued,
        ready_replicas=ready,
        per_replica=round(load / ready, 2) if ready else None,
        ttft_p90_ms=round(s.ttft_p90_ms, 1) if s.ttft_p90_ms is not None else None,
        idle_seconds=_coarse(s.idle_seconds) if s.idle_seconds is not None else None,
    )


def _coarse(seconds: float) -> int:
    """Idle time as status shows it: 10 s steps, then minutes. An idle
    service's status then changes once a minute, not at every evaluation
    (each change is a write to the API server)."""
    step = 10 if seconds < 60 else 60
    return int(seconds // step) * step
