"""Status conditions and the one-word phase (pure).

Conditions change only when they change: ``set_condition`` keeps
``lastTransitionTime`` while the status stays the same, so `kubectl wait`
and anything that watches transitions see real transitions only.
"""

from kubeinfer.operator.api.resource import InferenceService
from kubeinfer.operator.api.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    InferenceServiceStatus,
    Phase,
    RolloutPhase,
)
from kubeinfer.operator.builders.worker import startup_budget_seconds
from kubeinfer.operator.observe import PodInfo, format_time
from kubeinfer.operator.rollout import IN_ROLLOUT

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


def set_condition(
    conditions: list[Condition],
    kind: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: float,
    generation: int | None,
) -> list[Condition]:
    """``conditions`` with ``kind`` set; the transition time moves only
    when the status does."""
    old = next((c for c in conditions if c.type == kind.value), None)
    changed = old is None or old.status != status
    new = Condition(
        type=kind.value,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=format_time(now)
        if changed or old is None
        else old.last_transition_time,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == kind.value else c for c in conditions]


def condition(status: InferenceServiceStatus, kind: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind.value), None)


def summarise(
    isvc: InferenceService,
    status: InferenceServiceStatus,
    *,
    plan_busy: bool,
    failed: dict[str, str],
    obs_pods: list[PodInfo],
    routers_ready: int,
    now: float,
) -> None:
    """Fill counts, conditions and phase of ``status`` from what was observed."""
    spec, generation = isvc.spec, isvc.metadata.generation
    n = spec.replicas
    live = [p for p in obs_pods if not p.deleting]
    serving = [p for p in live if p.ready and p.name not in failed and p.draining_since is None]
    status.replicas = len(live)
    status.ready_replicas = len(serving)
    target = status.canary_revision or status.stable_revision
    status.updated_replicas = sum(1 for p in live if p.revision == target)
    status.ready_text = f"{len(serving)}/{n}"
    status.observed_generation = generation

    def put(kind: ConditionType, value: ConditionStatus, reason: str, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, kind, value, reason, message, now=now, generation=generation
        )

    routers_ok = spec.routing.router_replicas == 0 or routers_ready > 0
    if n == 0:
        put(ConditionType.READY, T, "ScaledToZero", "replicas is 0")
    elif len(serving) >= n and routers_ok:
        put(ConditionType.READY, T, "AllReplicasReady", f"{len(serving)}/{n} workers ready")
    elif not routers_ok:
        put(ConditionType.READY, F, "RouterNotReady", "no router pod is ready")
    else:
        put(ConditionType.READY, F, "WorkersNotReady", f"{len(serving)}/{n} workers ready")

    phase = status.rollout.phase
    budget = startup_budget_seconds(spec)
    starting = [
        p
        for p in live
        if not p.ready and p.name not in failed and now - (p.created_at or now) < budget
    ]
    if phase in IN_ROLLOUT:
        put(ConditionType.PROGRESSING, T, phase.value, status.rollout.message)
    elif starting:
        put(ConditionType.PROGRESSING, T, "Starting", f"{len(starting)} worker pods starting")
    elif plan_busy or len(live) != n:
        put(ConditionType.PROGRESSING, T, "Scaling", f"{len(live)} worker pods, want {n}")
    else:
        put(ConditionType.PROGRESSING, F, "Stable", f"serving revision {status.stable_revision}")

    unschedulable = [p for p in live if p.unschedulable_message]
    if unschedulable:
        put(
            ConditionType.DEGRADED,
            T,
            "Unschedulable" if spec.gpu.cpu_only else "InsufficientGPU",
            f"{len(unschedulable)} of {n} worker pods cannot be scheduled: "
            f"{unschedulable[0].unschedulable_message}",
        )
    elif failed:
        name, reason = sorted(failed.items())[0]
        put(
            ConditionType.DEGRADED,
            T,
            "ReplacingFailedPods",
            f"{len(failed)} failed: {name}: {reason}",
        )
    elif len(serving) < n and phase not in IN_ROLLOUT and not plan_busy and not starting:
        put(ConditionType.DEGRADED, T, "WorkersNotReady", f"{len(serving)}/{n} workers ready")
    else:
        put(ConditionType.DEGRADED, F, "AsExpected", "")

    analysis = status.rollout.last_analysis
    if phase is RolloutPhase.FAILED:
        detail = analysis.message if analysis and analysis.passed is False else "aborted"
        put(
            ConditionType.ROLLED_BACK,
            T,
            "CanaryFailed",
            f"revision {status.rollout.failed_revision} rolled back: {detail}",
        )
    elif condition(status, ConditionType.ROLLED_BACK) is None or phase in IN_ROLLOUT:
        put(ConditionType.ROLLED_BACK, F, "NoRollback", "")

    ready = condition(status, ConditionType.READY)
    degraded = condition(status, ConditionType.DEGRADED)
    progressing = condition(status, ConditionType.PROGRESSING)
    if progressing is not None and progressing.status is T:
        status.phase = Phase.PROGRESSING
    elif degraded is not None and degraded.status is T:
        status.phase = Phase.DEGRADED
    elif ready is not None and ready.status is T:
        status.phase = Phase.READY
    else:
        status.phase = Phase.PENDING
