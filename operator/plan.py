"""One reconcile, decided: observed state in, actions and new status out (pure).

``plan_reconcile`` is level-based: it does not care which event woke it.
It compares what exists (pods, nodes, router stats) with what the spec and
the persisted rollout state ask for, and returns the actions that move the
world one safe step closer. Running it twice on the same input gives the
same actions, and worker pod names are deterministic, so an operator that
dies between deciding and recording never creates a pod twice.
"""

import dataclasses
from dataclasses import dataclass, field

from kubeinfer.operator.analysis import GpuFacts, RouterStats, Verdict, judge_canary
from kubeinfer.operator.api.constants import ANNOTATION_ROLLOUT
from kubeinfer.operator.api.resource import InferenceService
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.api.status import (
    GpuFault,
    GpuHealth,
    InferenceServiceStatus,
    ReplicaStatus,
    RolloutPhase,
)
from kubeinfer.operator.builders.common import selector_string, worker_selector
from kubeinfer.operator.builders.cpubackend import cpu_memory_warnings
from kubeinfer.operator.builders.routing import RouteTarget
from kubeinfer.operator.conditions import summarise
from kubeinfer.operator.observe import NodeInfo, PodInfo, format_time, parse_time
from kubeinfer.operator.replacement import classify_failure, failures_after, replace_at
from kubeinfer.operator.rollout import (
    RESUME_COMMAND,
    RevisionCounts,
    World,
    apply_transition,
    desired_counts,
    detect_trigger,
    effective_weights,
    start,
)
from kubeinfer.operator.vram import GpuNode, vram_warnings

# GPU faults kept in status (newest last).
MAX_GPU_FAULTS = 20
# A draining pod stays at least this long, so every router has seen the
# table that marks it draining before its engine is told to stop.
DRAIN_MIN_SECONDS = 2.0
BUSY_REQUEUE_SECONDS = 1.0


@dataclass(frozen=True)
class PodToCreate:
    revision: str
    replica: int
    replaces: str | None = None
    failures: int = 0
    avoid_nodes: tuple[str, ...] = ()  # preferred: where it failed
    exclude_nodes: tuple[str, ...] = ()  # required: nodes that are lost


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str
    # Set on rollout transitions (and Created): names the transition, so
    # its Event is posted exactly once whichever leader makes it
    # (kubeinfer.operator.events).
    key: str | None = None


@dataclass(frozen=True)
class PodToDelete:
    name: str
    reason: str
    immediate: bool = False  # grace period 0: nothing to drain (failed pod)


@dataclass
class Plan:
    status: InferenceServiceStatus
    create: list[PodToCreate] = field(default_factory=list)
    delete: list[PodToDelete] = field(default_factory=list)
    drain: list[str] = field(default_factory=list)
    targets: list[RouteTarget] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    clear_command: bool = False
    requeue_seconds: float | None = None

    def busy(self) -> None:
        self.requeue_seconds = BUSY_REQUEUE_SECONDS


@dataclass(frozen=True)
class Observed:
    pods: list[PodInfo]  # this service's worker pods
    nodes: dict[str, NodeInfo]
    stats: RouterStats | None
    routers_ready: int
    now: float
    warnings: list[str] = field(default_factory=list)
    gpus: dict[str, GpuFacts] = field(default_factory=dict)  # per pod, from the routers


def spec_warnings(spec: InferenceServiceSpec, nodes: dict[str, NodeInfo]) -> list[str]:
    """What status.warnings says about the spec on these nodes (model too
    big for the GPUs, no such GPU, CPU worker memory)."""
    gpu_nodes = [
        GpuNode(n.name, n.gpu_product, n.gpu_memory_mib)
        for n in nodes.values()
        if n.gpu_product or n.gpu_memory_mib
    ]
    return vram_warnings(spec, gpu_nodes) + cpu_memory_warnings(spec)


def _counts(pods: list[PodInfo], failed: dict[str, str]) -> dict[str, RevisionCounts]:
    counts: dict[str, RevisionCounts] = {}
    for pod in pods:
        if pod.deleting or pod.name in failed:
            continue
        old = counts.get(pod.revision or "", RevisionCounts())
        if pod.draining_since is not None:
            counts[pod.revision or ""] = dataclasses.replace(old, draining=old.draining + 1)
        else:
            counts[pod.revision or ""] = dataclasses.replace(
                old, live=old.live + 1, ready=old.ready + int(pod.ready)
            )
    return counts


def _verdict(
    isvc: InferenceService, status: InferenceServiceStatus, obs: Observed
) -> Verdict | None:
    ro = status.rollout
    if ro.phase is not RolloutPhase.ANALYSING or obs.stats is None:
        return None
    started = parse_time(ro.step_started_at) or obs.now
    return judge_canary(
        analysis=isvc.spec.rollout.analysis,
        canary=obs.stats.revision(status.canary_revision),
        canary_baseline=(ro.baseline_requests, ro.baseline_errors),
        stable=obs.stats.revision(status.stable_revision),
        interval_elapsed=obs.now - started >= isvc.spec.rollout.step_interval_seconds,
    )


def _lost_nodes(nodes: dict[str, NodeInfo]) -> tuple[str, ...]:
    return tuple(sorted(n.name for n in nodes.values() if not n.ready))


def _drained(pod: PodInfo, obs: Observed, drain_seconds: int) -> bool:
    since = pod.draining_since or obs.now
    waited = obs.now - since
    if waited >= drain_seconds:
        return True
    if waited < DRAIN_MIN_SECONDS or obs.stats is None:
        return False
    return obs.stats.in_flight.get(pod.name, 0) == 0


def _replace_failed(
    plan: Plan, obs: Observed, failed: dict[str, str], live: list[PodInfo], desired: dict[str, int]
) -> None:
    """Failed pods leave at once (they are not in the routing table) and are
    replaced when their backoff allows it."""
    for pod in (p for p in live if p.name in failed):
        reason = failed[pod.name]
        if obs.now < replace_at(pod):
            plan.busy()
            continue
        plan.delete.append(PodToDelete(pod.name, reason, immediate=True))
        rev, replica = pod.revision or "", pod.replica or 0
        if replica < desired.get(rev, 0):
            plan.create.append(
                PodToCreate(
                    revision=rev,
                    replica=replica,
                    replaces=pod.name,
                    failures=failures_after(pod, obs.now),
                    avoid_nodes=(pod.node,) if pod.node else (),
                    exclude_nodes=_lost_nodes(obs.nodes),
                )
            )
            plan.events.append(Event("Warning", "ReplacingPod", f"{pod.name}: {reason}"))
        else:
            plan.events.append(Event("Warning", "DeletingFailedPod", f"{pod.name}: {reason}"))


def _delete_drained(
    plan: Plan, obs: Observed, failed: dict[str, str], live: list[PodInfo], drain_seconds: int
) -> None:
    """Draining pods are deleted once drained."""
    for pod in live:
        if pod.draining_since is None or pod.name in failed:
            continue
        if _drained(pod, obs, drain_seconds):
            plan.delete.append(PodToDelete(pod.name, "drained"))
        else:
            plan.busy()


def _trim_excess(plan: Plan, active: list[PodInfo], desired: dict[str, int], floor: int) -> None:
    """Too many pods of a revision: not-ready ones go at once; ready ones
    drain, and a serving one only while serving capacity stays >= ``floor``
    (replicas; replicas - 1 with maxSurge 0: replace in place, one at a time)."""
    serving = sum(1 for p in active if p.ready and plan.weights.get(p.revision or "", 0) > 0)
    for rev in sorted({p.revision or "" for p in active}):
        pods = [p for p in active if (p.revision or "") == rev]
        excess = len(pods) - desired.get(rev, 0)
        for pod in sorted(pods, key=lambda p: (p.ready, -(p.replica or 0)))[: max(0, excess)]:
            counts_as_serving = pod.ready and plan.weights.get(rev, 0) > 0
            if not pod.ready:
                plan.delete.append(PodToDelete(pod.name, "not needed", immediate=True))
            elif not counts_as_serving or serving - 1 >= floor:
                plan.drain.append(pod.name)
                serving -= int(counts_as_serving)
            plan.busy()


def _add_missing(
    plan: Plan,
    obs: Observed,
    live: list[PodInfo],
    desired: dict[str, int],
    target_revision: str,
    budget: int,
) -> None:
    """Missing pods, target revision first, within the GPU budget
    (replicas + maxSurge pods at once, counting those still leaving)."""
    leaving = {d.name for d in plan.delete}
    staying = [p for p in live if p.name not in leaving]
    holding = len(staying) + len(plan.create)
    for rev in sorted(desired, key=lambda rev: rev != target_revision):
        taken = {
            p.replica or 0
            for p in staying
            if (p.revision or "") == rev and p.draining_since is None and p.name not in plan.drain
        } | {c.replica for c in plan.create if c.revision == rev}
        missing = desired[rev] - len(taken)
        index = 0
        while missing > 0 and holding < budget:
            while index in taken:
                index += 1
            plan.create.append(
                PodToCreate(revision=rev, replica=index, exclude_nodes=_lost_nodes(obs.nodes))
            )
            taken.add(index)
            holding += 1
            missing -= 1
        if missing > 0:
            plan.busy()


def _plan_pods(
    isvc: InferenceService,
    plan: Plan,
    obs: Observed,
    failed: dict[str, str],
    target_revision: str,
) -> None:
    """The pod changes of this pass, in four steps (each one function)."""
    spec = isvc.spec
    desired = desired_counts(spec, plan.status)
    n, surge = spec.replicas, spec.rollout.max_surge
    live = [p for p in obs.pods if not p.deleting]
    _replace_failed(plan, obs, failed, live, desired)
    _delete_drained(plan, obs, failed, live, spec.worker.drain_seconds)
    active = [p for p in live if p.draining_since is None and p.name not in failed]
    _trim_excess(plan, active, desired, floor=n - (1 if surge == 0 else 0))
    _add_missing(plan, obs, live, desired, target_revision, budget=n + surge)


def _gpu_health(
    pod: PodInfo, facts: GpuFacts | None, old: ReplicaStatus | None, failed: dict[str, str]
) -> GpuHealth:
    if pod.gpu_fault is not None or (facts is not None and not facts.healthy):
        return GpuHealth.FAULTED
    if pod.name in failed:
        return GpuHealth.UNKNOWN
    if facts is None:
        return old.gpu_health if old is not None and old.gpu_health else GpuHealth.UNKNOWN
    return GpuHealth.HEALTHY


def _gpu_fields(
    pod: PodInfo, obs: Observed, old: ReplicaStatus | None, failed: dict[str, str]
) -> dict[str, object]:
    """The GPU columns of a replica row: the routers' newest report, else the
    last one recorded (stats are not read on every reconcile)."""
    if not pod.has_gpu:
        return {}
    facts = obs.gpus.get(pod.name)
    fields: dict[str, object] = {
        "gpu_health": _gpu_health(pod, facts, old, failed),
        "gpu_fault": pod.gpu_fault or (facts.fault if facts else None),
    }
    if facts is not None:
        fields |= {
            "gpu_uuid": facts.uuid,
            "gpu_memory_mi_b": facts.memory_mib,
            "gpu_memory_used_mi_b": facts.memory_used_mib,
        }
    elif old is not None:
        fields |= {
            "gpu_uuid": old.gpu_uuid,
            "gpu_memory_mi_b": old.gpu_memory_mi_b,
            "gpu_memory_used_mi_b": old.gpu_memory_used_mi_b,
        }
    if fields["gpu_fault"] is None and old is not None:
        fields["gpu_fault"] = old.gpu_fault
    if fields["gpu_fault"] is not None:
        fields["gpu_health"] = GpuHealth.FAULTED
    return fields


def _record_gpu_faults(plan: Plan, obs: Observed, previous: list[ReplicaStatus]) -> None:
    """Remember the GPU faults of pods being removed: their rows go, the
    fault record stays (which node, which GPU) for the inventory."""
    old_rows = {r.pod: r for r in previous}
    seen = {f.pod for f in plan.status.gpu_faults}
    pods = {p.name: p for p in obs.pods}
    for gone in plan.delete:
        pod, old = pods.get(gone.name), old_rows.get(gone.name)
        fault = (pod.gpu_fault if pod else None) or (old.gpu_fault if old else None)
        if pod is None or fault is None or gone.name in seen:
            continue
        plan.status.gpu_faults.append(
            GpuFault(
                node=pod.node,
                gpu_uuid=old.gpu_uuid if old else None,
                pod=pod.name,
                replica=pod.replica or 0,
                reason=fault,
                at=format_time(obs.now),
            )
        )
    plan.status.gpu_faults = plan.status.gpu_faults[-MAX_GPU_FAULTS:]


def _replica_rows(
    obs: Observed,
    failed: dict[str, str],
    draining: set[str],
    previous: list[ReplicaStatus],
) -> list[ReplicaStatus]:
    old_rows = {r.pod: r for r in previous}
    rows = []
    for pod in sorted(obs.pods, key=lambda p: (p.revision or "", p.replica or 0, p.name)):
        if pod.deleting:
            continue
        node = obs.nodes.get(pod.node or "")
        row = ReplicaStatus(
            pod=pod.name,
            replica=pod.replica or 0,
            revision=pod.revision or "",
            node=pod.node,
            # A CPU worker may run on a GPU node without using its GPU.
            gpu_product=node.gpu_product if node and pod.has_gpu else None,
            ready=pod.ready and pod.name not in failed,
            draining=pod.draining_since is not None or pod.name in draining,
            restarts=pod.restarts,
            last_failure=failed.get(pod.name) or pod.termination_message,
        )
        rows.append(row.model_copy(update=_gpu_fields(pod, obs, old_rows.get(pod.name), failed)))
    return rows


def _targets(obs: Observed, failed: dict[str, str], draining: set[str]) -> list[RouteTarget]:
    return [
        RouteTarget(
            pod=p.name,
            ip=p.ip,
            revision=p.revision or "",
            draining=p.draining_since is not None or p.name in draining,
            has_gpu=p.has_gpu,
        )
        for p in obs.pods
        if p.ready and p.ip and not p.deleting and p.name not in failed
    ]


def plan_reconcile(
    isvc: InferenceService,
    *,
    revision: str,
    template: dict[str, object],
    observed: Observed,
) -> Plan:
    """Decide one reconcile of ``isvc`` whose spec hashes to ``revision``."""
    status = isvc.status.model_copy(deep=True)
    plan = Plan(status=status)
    obs = observed
    failed = {
        p.name: reason
        for p in obs.pods
        if not p.deleting and (reason := classify_failure(p, obs.nodes)) is not None
    }
    command = isvc.metadata.annotations.get(ANNOTATION_ROLLOUT)
    if status.stable_revision is None:
        message = start(status, revision, template, obs.now)
        plan.events.append(Event("Normal", "Created", message, key="Created"))
    verdict = _verdict(isvc, status, obs)
    canary = obs.stats.revision(status.canary_revision) if obs.stats else None
    world = World(
        spec=isvc.spec,
        target_revision=revision,
        command=command,
        counts=_counts(obs.pods, failed),
        verdict=verdict,
        now=obs.now,
        canary_totals=(canary.requests, canary.errors) if canary else (0, 0),
    )
    trigger = detect_trigger(world, status)
    if trigger is not None:
        transition = apply_transition(status, trigger, world, template)
        plan.events.append(
            Event(
                transition.event_type,
                transition.trigger.value,
                transition.message,
                key=transition.key,
            )
        )
        plan.busy()
    elif verdict is not None:
        status.rollout.message = verdict.message
    # One-shot commands are consumed once acted on (or when there is no
    # rollout for them); `pause` is a level and stays.
    plan.clear_command = command == RESUME_COMMAND or (
        command in ("promote", "abort") and (trigger is not None or status.canary_revision is None)
    )
    plan.weights = effective_weights(isvc.spec, status, world.counts)
    _plan_pods(isvc, plan, obs, failed, revision)
    draining = set(plan.drain)
    plan.targets = _targets(obs, failed, draining)
    _record_gpu_faults(plan, obs, isvc.status.replica_statuses)
    status.replica_statuses = _replica_rows(obs, failed, draining, isvc.status.replica_statuses)
    status.canary_weight = plan.weights.get(status.canary_revision or "", 0)
    status.selector = selector_string(worker_selector(isvc.metadata.name))
    status.warnings = list(obs.warnings)
    summarise(
        isvc,
        status,
        plan_busy=plan.requeue_seconds is not None,
        failed=failed,
        obs_pods=obs.pods,
        routers_ready=obs.routers_ready,
        now=obs.now,
    )
    return plan
