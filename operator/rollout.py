"""The canary rollout state machine (pure).

The phases are ``RolloutPhase`` (api/status.py, one comment each). What
may happen in each phase is the ``TRANSITIONS`` table; ``detect_trigger``
looks at the world and names at most one trigger per reconcile;
``apply_transition`` is the one function that does everything a phase
change does (phase, step, weights, history, conditions' inputs, event).

Pod counts per step: at weight ``w`` the canary gets ``ceil(N * w / 100)``
pods (at least one) and the stable revision keeps what the GPU budget
``N + maxSurge`` leaves, at most N. With ``maxSurge: 0`` that replaces
stable pods in place; the pod reconciler removes at most one serving pod
at a time, so capacity never drops by more than one GPU.
"""

import math
from dataclasses import dataclass
from enum import StrEnum

from kubeinfer.operator.analysis import Verdict
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.api.status import (
    AnalysisResult,
    InferenceServiceStatus,
    RevisionRecord,
    RolloutPhase,
)
from kubeinfer.operator.observe import format_time

P = RolloutPhase


class Trigger(StrEnum):
    NEW_REVISION = "NewRevision"  # the spec asks for a revision that is neither stable nor failed
    REVERTED = "Reverted"  # the spec is back at the stable revision mid-rollout
    STEP_READY = "StepReady"  # the canary pods of this step are in place and ready
    STEP_PASSED = "StepPassed"  # analysis passed, more steps to go
    CANARY_PASSED = "CanaryPassed"  # analysis passed at the last step
    STEP_FAILED = "StepFailed"  # analysis failed (autoRollback on)
    STEP_FAILED_HELD = "StepFailedHeld"  # analysis failed with autoRollback off
    PROMOTED = "Promoted"  # the old revision's pods are gone
    ROLLED_BACK = "RolledBack"  # the canary's pods are gone
    PAUSE = "Pause"  # kubeinfer.io/rollout: pause
    RESUME = "Resume"  # the pause annotation was removed (or set to resume)
    MANUAL_PROMOTE = "ManualPromote"  # kubeinfer.io/rollout: promote
    ABORT = "Abort"  # kubeinfer.io/rollout: abort


# The canary moves step by step and takes commands (pause, promote, abort).
STEPPING = (P.PROGRESSING, P.ANALYSING, P.PAUSED)
# A rollout is under way (the Progressing condition is True): stepping, or
# finishing one way or the other.
IN_ROLLOUT = (*STEPPING, P.PROMOTING, P.ROLLING_BACK)

TRANSITIONS: dict[tuple[RolloutPhase, Trigger], RolloutPhase] = {
    **{(p, Trigger.NEW_REVISION): P.PROGRESSING for p in RolloutPhase},
    **{(p, Trigger.REVERTED): P.IDLE for p in IN_ROLLOUT},
    (P.PROGRESSING, Trigger.STEP_READY): P.ANALYSING,
    (P.ANALYSING, Trigger.STEP_PASSED): P.PROGRESSING,
    (P.ANALYSING, Trigger.CANARY_PASSED): P.PROMOTING,
    (P.ANALYSING, Trigger.STEP_FAILED): P.ROLLING_BACK,
    (P.ANALYSING, Trigger.STEP_FAILED_HELD): P.PAUSED,
    (P.PROMOTING, Trigger.PROMOTED): P.IDLE,
    (P.ROLLING_BACK, Trigger.ROLLED_BACK): P.FAILED,
    (P.PROGRESSING, Trigger.PAUSE): P.PAUSED,
    (P.ANALYSING, Trigger.PAUSE): P.PAUSED,
    (P.PAUSED, Trigger.RESUME): P.PROGRESSING,
    **{(p, Trigger.MANUAL_PROMOTE): P.PROMOTING for p in STEPPING},
    **{(p, Trigger.ABORT): P.ROLLING_BACK for p in STEPPING},
}

# The kubeinfer.io/rollout annotation's commands; the table says in which
# phases each applies. While paused, any other value (or none) resumes,
# except after a failed step (autoRollback off), which waits for `resume`.
RESUME_COMMAND = "resume"
COMMANDS: dict[str, Trigger] = {
    "pause": Trigger.PAUSE,
    "promote": Trigger.MANUAL_PROMOTE,
    "abort": Trigger.ABORT,
}


@dataclass(frozen=True)
class RevisionCounts:
    """Pods of one revision that are not being deleted."""

    live: int = 0
    ready: int = 0
    draining: int = 0  # still finishing requests: they hold a GPU until gone


@dataclass(frozen=True)
class World:
    """Everything the state machine looks at, already observed."""

    spec: InferenceServiceSpec
    target_revision: str
    command: str | None  # value of the kubeinfer.io/rollout annotation
    counts: dict[str, RevisionCounts]
    verdict: Verdict | None  # only while analysing
    now: float
    canary_totals: tuple[int, int] = (0, 0)  # cumulative (requests, errors) from the routers

    def count(self, revision: str | None) -> RevisionCounts:
        return self.counts.get(revision or "", RevisionCounts())


def canary_pods(replicas: int, weight: int) -> int:
    """Whole GPUs for the canary at ``weight`` percent: at least one."""
    if replicas == 0:
        return 0
    return min(replicas, max(1, math.ceil(replicas * weight / 100)))


def step_weight(spec: InferenceServiceSpec, step: int) -> int:
    steps = spec.rollout.steps
    return steps[min(step, len(steps) - 1)]


def desired_counts(spec: InferenceServiceSpec, status: InferenceServiceStatus) -> dict[str, int]:
    """Pods wanted per revision in the current phase."""
    n, surge = spec.replicas, spec.rollout.max_surge
    stable, canary = status.stable_revision, status.canary_revision
    phase = status.rollout.phase
    if stable is None:
        return {}
    if canary is None or phase in (P.IDLE, P.FAILED, P.ROLLING_BACK):
        return {stable: n}
    if phase is P.PROMOTING:
        return {canary: n, stable: 0}
    c = canary_pods(n, step_weight(spec, status.rollout.step))
    return {canary: c, stable: min(n, n + surge - c)}


def target_weight(spec: InferenceServiceSpec, status: InferenceServiceStatus) -> int:
    """Canary traffic percent the phase asks for, before capacity."""
    phase = status.rollout.phase
    if status.canary_revision is None or phase in (P.IDLE, P.FAILED, P.ROLLING_BACK):
        return 0
    if phase is P.PROMOTING:
        return 100
    return step_weight(spec, status.rollout.step)


def effective_weights(
    spec: InferenceServiceSpec, status: InferenceServiceStatus, counts: dict[str, RevisionCounts]
) -> dict[str, int]:
    """Traffic per revision, following the canary's *ready* capacity: a
    step at 50 % with half of its canary pods ready sends 25 %."""
    stable, canary = status.stable_revision, status.canary_revision
    if stable is None:
        return {}
    weight = target_weight(spec, status)
    if canary is None or weight == 0:
        return {stable: 100}
    wanted = desired_counts(spec, status).get(canary, 0)
    ready = counts.get(canary, RevisionCounts()).ready
    canary_weight = round(weight * min(1.0, ready / wanted)) if wanted else 0
    if canary_weight >= 100:
        return {canary: 100}
    return {stable: 100 - canary_weight, canary: canary_weight}


def held_by_analysis(status: InferenceServiceStatus) -> bool:
    """Paused because a step failed with autoRollback off: only a person's
    command (resume, promote, abort) moves it, not a missing annotation."""
    last = status.rollout.last_analysis
    return status.rollout.phase is P.PAUSED and last is not None and last.passed is False


def _command_trigger(status: InferenceServiceStatus, command: str | None) -> Trigger | None:
    phase = status.rollout.phase
    trigger = COMMANDS.get(command or "")
    resumes = command == RESUME_COMMAND or not held_by_analysis(status)
    if trigger is None and phase is P.PAUSED and resumes:
        trigger = Trigger.RESUME
    return trigger if trigger is not None and (phase, trigger) in TRANSITIONS else None


def _progress_trigger(world: World, status: InferenceServiceStatus) -> Trigger | None:
    phase = status.rollout.phase
    stable, canary = status.stable_revision, status.canary_revision
    want = desired_counts(world.spec, status)
    if phase is P.PROGRESSING and canary is not None:
        c, s = world.count(canary), world.count(stable)
        in_place = c.live == want[canary] and s.live == want.get(stable or "", 0)
        if in_place and c.ready == want[canary]:
            return Trigger.STEP_READY
    if phase is P.ANALYSING and world.verdict is not None and world.verdict.passed is not None:
        if not world.verdict.passed:
            return (
                Trigger.STEP_FAILED
                if world.spec.rollout.auto_rollback
                else Trigger.STEP_FAILED_HELD
            )
        last = status.rollout.step >= len(world.spec.rollout.steps) - 1
        return Trigger.CANARY_PASSED if last else Trigger.STEP_PASSED
    if phase is P.PROMOTING and canary is not None:
        old = world.count(stable)
        done = old.live + old.draining == 0 and world.count(canary).ready >= world.spec.replicas
        if done:
            return Trigger.PROMOTED
    if phase is P.ROLLING_BACK and world.count(canary).live == 0:
        return Trigger.ROLLED_BACK
    return None


def detect_trigger(world: World, status: InferenceServiceStatus) -> Trigger | None:
    """At most one trigger, spec changes first, then user commands, then progress."""
    phase = status.rollout.phase
    target = world.target_revision
    if status.stable_revision is None:
        return None
    if target == status.stable_revision:
        if status.canary_revision is not None and phase is not P.PROMOTING:
            return Trigger.REVERTED
    elif target != status.canary_revision and target != status.rollout.failed_revision:
        return Trigger.NEW_REVISION
    return _command_trigger(status, world.command) or _progress_trigger(world, status)


@dataclass(frozen=True)
class Transition:
    trigger: Trigger
    before: RolloutPhase
    after: RolloutPhase
    event_type: str  # Normal or Warning
    message: str
    number: int  # of this transition, counted from 0 per InferenceService

    @property
    def key(self) -> str:
        """Names this transition once (its Event's name derives from it)."""
        return f"{self.number}-{self.trigger.value}"


def _record(
    status: InferenceServiceStatus,
    revision: str,
    outcome: str,
    template: dict[str, object],
    now: float,
) -> None:
    number = max((r.number for r in status.revision_history), default=0) + 1
    kept = [r for r in status.revision_history if r.revision != revision][-9:]
    record = RevisionRecord(
        number=number,
        revision=revision,
        outcome=outcome,
        created_at=format_time(now),
        template=template,
    )
    status.revision_history = [*kept, record]


def apply_transition(
    status: InferenceServiceStatus,
    trigger: Trigger,
    world: World,
    template: dict[str, object],
) -> Transition:
    """Everything a phase change does, in one place. Mutates ``status``.

    Raises:
        KeyError: when the table has no such transition (a bug in detect_trigger).
    """
    ro = status.rollout
    before = ro.phase
    after = TRANSITIONS[(before, trigger)]
    now = format_time(world.now)
    event_type, message = "Normal", ""
    match trigger:
        case Trigger.NEW_REVISION:
            status.canary_revision = world.target_revision
            ro.step, ro.failed_revision, ro.last_analysis = 0, None, None
            message = f"rolling out revision {world.target_revision} over {status.stable_revision}"
        case Trigger.REVERTED:
            message = (
                f"spec is back at {status.stable_revision}; canary {status.canary_revision} removed"
            )
            status.canary_revision = None
        case Trigger.STEP_READY:
            ro.baseline_requests, ro.baseline_errors = world.canary_totals
            message = f"step {ro.step + 1}: canary at {step_weight(world.spec, ro.step)}%"
        case Trigger.STEP_PASSED:
            assert world.verdict is not None
            message = f"step {ro.step + 1} passed: {world.verdict.message}"
            ro.step += 1
        case Trigger.CANARY_PASSED:
            assert world.verdict is not None
            message = f"canary {status.canary_revision} passed: {world.verdict.message}; promoting"
        case Trigger.STEP_FAILED:
            assert world.verdict is not None
            event_type = "Warning"
            message = f"canary {status.canary_revision} failed: {world.verdict.message}"
            ro.failed_revision = status.canary_revision
        case Trigger.STEP_FAILED_HELD:
            assert world.verdict is not None
            event_type = "Warning"
            message = (
                f"canary {status.canary_revision} failed: {world.verdict.message}; "
                "paused (autoRollback is off)"
            )
        case Trigger.PROMOTED:
            assert status.canary_revision is not None
            message = f"revision {status.canary_revision} promoted to stable"
            _record(status, status.canary_revision, "Promoted", template, world.now)
            status.stable_revision, status.canary_revision = status.canary_revision, None
        case Trigger.ROLLED_BACK:
            event_type = "Warning"
            message = f"rolled back to {status.stable_revision}"
            status.canary_revision = None
        case Trigger.PAUSE:
            message = "rollout paused"
        case Trigger.RESUME:
            message = "rollout resumed"
        case Trigger.MANUAL_PROMOTE:
            message = f"revision {status.canary_revision} promoted by request"
        case Trigger.ABORT:
            event_type = "Warning"
            message = f"rollout of {status.canary_revision} aborted by request"
            ro.failed_revision = status.canary_revision
    if world.verdict is not None and trigger in (
        Trigger.STEP_PASSED,
        Trigger.CANARY_PASSED,
        Trigger.STEP_FAILED,
        Trigger.STEP_FAILED_HELD,
    ):
        ro.last_analysis = AnalysisResult(
            step=ro.step,
            passed=world.verdict.passed,
            message=world.verdict.message,
            canary=world.verdict.canary,
            stable=world.verdict.stable,
        )
    ro.phase = after
    ro.step_started_at = now
    ro.message = message
    number = ro.transitions
    ro.transitions += 1
    return Transition(trigger, before, after, event_type, message, number)


def start(
    status: InferenceServiceStatus, revision: str, template: dict[str, object], now: float
) -> str:
    """The first reconcile: the spec's revision becomes stable at once."""
    status.stable_revision = revision
    status.rollout.phase = P.IDLE
    _record(status, revision, "Initial", template, now)
    return f"serving revision {revision}"
