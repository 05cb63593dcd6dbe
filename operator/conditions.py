"""Status conditions and the one-word phase (pure).

Conditions change only when they change: ``set_condition`` keeps
``lastTransitionTime`` while the status stays the same, so `kubectl wait`
and anything that watches transitions see real transitions only.
"""

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Seen:
    """What the conditions are decided from, counted once."""

    want: int  # spec.replicas
    live: int  # worker pods not being deleted
    serving: int  # ready, not failed, not draining
    starting: int  # not ready yet, still within the start-up budget
    unschedulable: list[PodInfo]
    failed: dict[str, str]  # pod name -> why it is being replaced
    routers_ok: bool
    plan_busy: bool
    phase: RolloutPhase


Verdict = tuple[ConditionStatus, str, str]  # status, reason, message


def ready_verdict(seen: Seen) -> Verdict:
    if seen.want == 0:
        return T, "ScaledToZero", "replicas is 0"
    if seen.serving >= seen.want and seen.routers_ok:
        return T, "AllReplicasReady", f"{seen.serving}/{seen.want} workers ready"
    if not seen.routers_ok:
        return F, "RouterNotReady", "no router pod is ready"
    return F, "WorkersNotReady", f"{seen.serving}/{seen.want} workers ready"


def progressing_verdict(seen: Seen, status: InferenceServiceStatus) -> Verdict:
    if seen.phase in IN_ROLLOUT:
        return T, seen.phase.value, status.rollout.message
    if seen.starting:
        return T, "Starting", f"{seen.starting} worker pods starting"
    if seen.plan_busy or seen.live != seen.want:
        return T, "Scaling", f"{seen.live} worker pods, want {seen.want}"
    return F, "Stable", f"serving revision {status.stable_revision}"


def degraded_verdict(seen: Seen, cpu_only: bool) -> Verdict:
    if seen.unschedulable:
        return (
            T,
            "Unschedulable" if cpu_only else "InsufficientGPU",
            f"{len(seen.unschedulable)} of {seen.want} worker pods cannot be scheduled: "
            f"{seen.unschedulable[0].unschedulable_message}",
        )
    if seen.failed:
        name, reason = sorted(seen.failed.items())[0]
        return T, "ReplacingFailedPods", f"{len(seen.failed)} failed: {name}: {reason}"
    settled = seen.phase not in IN_ROLLOUT and not seen.plan_busy and not seen.starting
    if seen.serving < seen.want and settled:
        return T, "WorkersNotReady", f"{seen.serving}/{seen.want} workers ready"
    return F, "AsExpected", ""


def rolled_back_verdict(seen: Seen, status: InferenceServiceStatus) -> Verdict | None:
    """None: leave the condition as it is (a rollback stays visible until
    the next rollout starts)."""
    if seen.phase is RolloutPhase.FAILED:
        analysis = status.rollout.last_analysis
        detail = analysis.message if analysis and analysis.passed is False else "aborted"
        return (
            T,
            "CanaryFailed",
            f"revision {status.rollout.failed_revision} rolled back: {detail}",
        )
    if condition(status, ConditionType.ROLLED_BACK) is None or seen.phase in IN_ROLLOUT:
        return F, "NoRollback", ""
    return None


def phase_of(status: InferenceServiceStatus) -> Phase:
    """The one word: Progressing over Degraded over Ready."""
    for kind, phase in (
        (ConditionType.PROGRESSING, Phase.PROGRESSING),
        (ConditionType.DEGRADED, Phase.DEGRADED),
        (ConditionType.READY, Phase.READY),
    ):
        found = condition(status, kind)
        if found is not None and found.status is T:
            return phase
    return Phase.PENDING


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
    live = [p for p in obs_pods if not p.deleting]
    serving = [p for p in live if p.ready and p.name not in failed and p.draining_since is None]
    status.replicas = len(live)
    status.ready_replicas = len(serving)
    target = status.canary_revision or status.stable_revision
    status.updated_replicas = sum(1 for p in live if p.revision == target)
    status.ready_text = f"{len(serving)}/{spec.replicas}"
    status.observed_generation = generation

    budget = startup_budget_seconds(spec)
    seen = Seen(
        want=spec.replicas,
        live=len(live),
        serving=len(serving),
        starting=sum(
            1
            for p in live
            if not p.ready and p.name not in failed and now - (p.created_at or now) < budget
        ),
        unschedulable=[p for p in live if p.unschedulable_message],
        failed=failed,
        routers_ok=spec.routing.router_replicas == 0 or routers_ready > 0,
        plan_busy=plan_busy,
        phase=status.rollout.phase,
    )

    def put(kind: ConditionType, verdict: Verdict) -> None:
        value, reason, message = verdict
        status.conditions = set_condition(
            status.conditions, kind, value, reason, message, now=now, generation=generation
        )

    put(ConditionType.READY, ready_verdict(seen))
    put(ConditionType.PROGRESSING, progressing_verdict(seen, status))
    put(ConditionType.DEGRADED, degraded_verdict(seen, spec.gpu.cpu_only))
    rolled_back = rolled_back_verdict(seen, status)
    if rolled_back is not None:
        put(ConditionType.ROLLED_BACK, rolled_back)
    status.phase = phase_of(status)
