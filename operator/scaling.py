"""The autoscaler's edge: observed pods and router stats in, a decision, its
write through the scale subresource, its Event, metrics and status.

The decision itself is ``kubeinfer.operator.autoscale.decide`` (pure);
this module only gathers its input and carries out its output.
"""

from dataclasses import dataclass, field

from kubeinfer.operator.analysis import RouterStats
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import InferenceService
from kubeinfer.operator.api.status import (
    AutoscalingStatus,
    InferenceServiceStatus,
    RolloutPhase,
    ScalingDecision,
)
from kubeinfer.operator.autoscale import (
    Recommendation,
    ScaleDecision,
    ScaleInput,
    Signals,
    signals_status,
)
from kubeinfer.operator.kube import KubeClient
from kubeinfer.operator.metrics import (
    AUTOSCALING_DECISIONS,
    AUTOSCALING_REPLICAS,
    AUTOSCALING_SIGNAL,
)
from kubeinfer.operator.observe import NodeInfo, PodInfo, format_time
from kubeinfer.operator.plan import Event
from kubeinfer.operator.replacement import classify_failure

_IDLE_PHASES = (RolloutPhase.IDLE, RolloutPhase.FAILED)
Key = tuple[str, str]


@dataclass
class AutoscalerMemory:
    """Per InferenceService, in the operator's memory (like the HPA's)."""

    history: dict[Key, tuple[Recommendation, ...]] = field(default_factory=dict)
    last_evaluation: dict[Key, float] = field(default_factory=dict)
    # The replicas we wrote and the resourceVersion the object had before:
    # until the watch delivers our write, plan with what we wrote.
    written: dict[Key, tuple[str, int]] = field(default_factory=dict)


def signals_from(stats: RouterStats | None) -> Signals | None:
    if stats is None:
        return None
    busiest = max(stats.revisions.values(), key=lambda r: r.window_requests, default=None)
    return Signals(
        routers=stats.routers,
        in_flight=sum(stats.in_flight.values()),
        queued=stats.queued,
        idle_seconds=stats.idle_seconds,
        ttft_p90_ms=busiest.p90_ttft_ms if busiest else None,
        ttft_requests=busiest.window_requests if busiest else 0,
    )


def with_written_replicas(memory: AutoscalerMemory, isvc: InferenceService) -> InferenceService:
    """``isvc`` with the replicas we wrote, if the watch has not caught up."""
    key = (isvc.metadata.namespace, isvc.metadata.name)
    pending = memory.written.get(key)
    if pending is None:
        return isvc
    stale_version, replicas = pending
    if isvc.metadata.resource_version != stale_version:
        del memory.written[key]
        return isvc
    return isvc.model_copy(update={"spec": isvc.spec.model_copy(update={"replicas": replicas})})


def scale_input(
    isvc: InferenceService,
    workers: list[PodInfo],
    nodes: dict[str, NodeInfo],
    stats: RouterStats | None,
    history: tuple[Recommendation, ...],
    now: float,
) -> ScaleInput:
    assert isvc.spec.autoscaling is not None
    live = [p for p in workers if not p.deleting and p.draining_since is None]
    failed = {p.name for p in live if classify_failure(p, nodes) is not None}
    return ScaleInput(
        spec=isvc.spec.autoscaling,
        current=isvc.spec.replicas,
        ready=sum(1 for p in live if p.ready and p.name not in failed),
        signals=signals_from(stats),
        now=now,
        history=history,
        rollout_active=isvc.status.rollout.phase not in _IDLE_PHASES,
        unschedulable=sum(1 for p in live if p.unschedulable_message),
        starting=sum(
            1 for p in live if not p.ready and not p.unschedulable_message and p.name not in failed
        ),
    )


def decision_event(current: int, decision: ScaleDecision) -> Event:
    verb = "ScaledUp" if decision.desired > current else "ScaledDown"
    return Event("Normal", verb, f"{decision.reason}: {decision.message}")


async def write_replicas(kube: KubeClient, isvc: InferenceService, replicas: int) -> str | None:
    """Through the scale subresource, as `kubectl scale` and an HPA do.
    Returns the object's new resourceVersion (the Scale carries it)."""
    meta = isvc.metadata
    scale = await kube.merge_patch(
        c.KIND, meta.namespace, meta.name, {"spec": {"replicas": replicas}}, sub="scale"
    )
    version = (scale.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


def record(
    isvc: InferenceService,
    status: InferenceServiceStatus,
    inp: ScaleInput,
    decision: ScaleDecision,
    changed_from: int | None,
    now: float,
) -> None:
    """Status and metrics of one evaluation (``changed_from``: replicas before a change)."""
    meta = isvc.metadata
    old = status.autoscaling or AutoscalingStatus()
    last = old.last_decision
    if changed_from is not None:
        last = ScalingDecision(
            time=format_time(now),
            from_replicas=changed_from,
            to_replicas=decision.desired,
            reason=decision.reason,
            message=decision.message,
        )
        direction = "up" if decision.desired > changed_from else "down"
        AUTOSCALING_DECISIONS.labels(direction, decision.reason).inc()
    status.autoscaling = AutoscalingStatus(
        desired_replicas=decision.desired,
        current_replicas=status.replicas,
        recommendation=decision.recommendation,
        reason=decision.reason,
        message=decision.message,
        signals=signals_status(inp.signals, inp.ready),
        last_decision=last,
    )
    labels = (meta.namespace, meta.name)
    AUTOSCALING_REPLICAS.labels(*labels, "desired").set(decision.desired)
    AUTOSCALING_REPLICAS.labels(*labels, "recommended").set(decision.recommendation)
    AUTOSCALING_REPLICAS.labels(*labels, "ready").set(inp.ready)
    if inp.signals is not None:
        s = inp.signals
        AUTOSCALING_SIGNAL.labels(*labels, "in_flight").set(s.in_flight)
        AUTOSCALING_SIGNAL.labels(*labels, "queued").set(s.queued)
        if s.idle_seconds is not None:
            AUTOSCALING_SIGNAL.labels(*labels, "idle_seconds").set(s.idle_seconds)
        if s.ttft_p90_ms is not None:
            AUTOSCALING_SIGNAL.labels(*labels, "ttft_p90_ms").set(s.ttft_p90_ms)


def forget(memory: AutoscalerMemory, key: Key) -> None:
    memory.history.pop(key, None)
    memory.last_evaluation.pop(key, None)
    memory.written.pop(key, None)
