"""`InferenceService.status`: what the operator observed and decided.

All rollout state lives here (never only in the operator's memory), so an
operator restarted mid-rollout continues where it was.
"""

from enum import StrEnum
from typing import Annotated, Any

from kubeinfer.operator.api.base import ApiModel
from pydantic import Field


class Phase(StrEnum):
    """The one-word summary shown by `kubectl get infsvc`."""

    PENDING = "Pending"  # nothing ready yet
    READY = "Ready"  # all replicas ready, no rollout
    PROGRESSING = "Progressing"  # a rollout or a scale change is under way
    DEGRADED = "Degraded"  # serving, but with fewer ready replicas than asked
    FAILED = "Failed"  # the spec can never work (see conditions)


class RolloutPhase(StrEnum):
    """Where a canary rollout stands (see kubeinfer.operator.rollout)."""

    IDLE = "Idle"  # no canary: every pod runs the stable revision
    PROGRESSING = "Progressing"  # canary pods being created / becoming ready
    ANALYSING = "Analysing"  # at a step, waiting for time and requests, then judging
    PAUSED = "Paused"  # held by the user (kubeinfer.io/rollout: pause)
    PROMOTING = "Promoting"  # canary passed: becoming stable, old pods draining
    ROLLING_BACK = "RollingBack"  # canary failed or aborted: canary pods going away
    FAILED = "Failed"  # rolled back; this revision is not retried until the spec changes


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: Annotated[str, Field(description="Ready, Progressing, Degraded or RolledBack.")]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(description="CamelCase reason.")] = ""
    message: Annotated[str, Field(description="Human-readable details.")] = ""
    last_transition_time: Annotated[
        str | None, Field(description="When status last changed (RFC 3339).")
    ] = None
    observed_generation: Annotated[
        int | None, Field(description="Generation this condition was set for.")
    ] = None


class RevisionStats(ApiModel):
    """Per-revision stats read from the routers' /debug/backends."""

    requests: Annotated[int, Field(description="Requests in the window.")] = 0
    errors: Annotated[int, Field(description="Failed requests in the window.")] = 0
    error_rate: Annotated[float, Field(description="errors / requests.")] = 0.0
    p99_latency_ms: Annotated[float | None, Field(description="p99 latency.")] = None
    p99_ttft_ms: Annotated[float | None, Field(description="p99 time to first token.")] = None


class AnalysisResult(ApiModel):
    """The last canary judgement."""

    step: Annotated[int, Field(description="Step index judged.")] = 0
    passed: Annotated[bool | None, Field(description="True passed, False failed.")] = None
    message: Annotated[str, Field(description="Why, with the measured numbers.")] = ""
    canary: Annotated[RevisionStats, Field(description="Canary stats.")] = Field(
        default_factory=RevisionStats
    )
    stable: Annotated[RevisionStats, Field(description="Stable stats.")] = Field(
        default_factory=RevisionStats
    )


class RolloutStatus(ApiModel):
    """The canary state machine's persisted state."""

    phase: Annotated[RolloutPhase, Field(description="Rollout phase.")] = RolloutPhase.IDLE
    step: Annotated[int, Field(ge=0, description="Index into spec.rollout.steps.")] = 0
    step_started_at: Annotated[
        str | None, Field(description="When the current step started (RFC 3339).")
    ] = None
    baseline_requests: Annotated[
        int, Field(description="Canary requests counted before this step started.")
    ] = 0
    failed_revision: Annotated[
        str | None, Field(description="Revision that failed; not retried until the spec changes.")
    ] = None
    last_analysis: Annotated[
        AnalysisResult | None, Field(description="The last canary judgement.")
    ] = None
    baseline_errors: Annotated[
        int, Field(description="Canary errors counted before this step started.")
    ] = 0
    message: Annotated[str, Field(description="What the rollout is doing or waiting for.")] = ""
    transitions: Annotated[
        int,
        Field(
            ge=0,
            description="Rollout transitions so far; each one's Event is named after its number.",
        ),
    ] = 0


class RevisionRecord(ApiModel):
    """One entry of the revision history, enough to roll back to it."""

    number: Annotated[int, Field(ge=1, description="Increasing revision number.")]
    revision: Annotated[str, Field(description="Revision hash.")]
    created_at: Annotated[str | None, Field(description="When first seen (RFC 3339).")] = None
    outcome: Annotated[
        str, Field(description="How it became stable: Initial, Promoted or Undo.")
    ] = "Initial"
    template: Annotated[
        dict[str, Any],
        Field(
            description="The revisioned spec fields (model, gpu, worker) of this revision.",
            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ] = Field(default_factory=dict)


class GpuHealth(StrEnum):
    """A worker's GPU as its agent reports it (NVML)."""

    HEALTHY = "Healthy"
    FAULTED = "Faulted"  # Xid, ECC or lost GPU: the pod is being replaced
    UNKNOWN = "Unknown"  # no report yet (starting, or the routers are away)


class ReplicaStatus(ApiModel):
    """One worker pod."""

    pod: Annotated[str, Field(description="Pod name.")]
    replica: Annotated[int, Field(description="Replica index.")]
    revision: Annotated[str, Field(description="Revision hash of the pod.")]
    node: Annotated[str | None, Field(description="Node it runs on.")] = None
    gpu_product: Annotated[str | None, Field(description="GPU model of that node.")] = None
    ready: Annotated[bool, Field(description="Ready and in rotation.")] = False
    draining: Annotated[bool, Field(description="Finishing in-flight requests.")] = False
    restarts: Annotated[int, Field(description="Container restarts.")] = 0
    last_failure: Annotated[str | None, Field(description="Last failure reason.")] = None
    gpu_uuid: Annotated[
        str | None, Field(description="UUID of the pod's GPU, as the worker's NVML reports it.")
    ] = None
    gpu_memory_mi_b: Annotated[
        int | None, Field(alias="gpuMemoryMiB", description="The GPU's total memory (NVML).")
    ] = None
    gpu_memory_used_mi_b: Annotated[
        int | None,
        Field(alias="gpuMemoryUsedMiB", description="GPU memory in use (NVML, refreshed ~15 s)."),
    ] = None
    gpu_health: Annotated[
        GpuHealth | None,
        Field(description="Healthy, Faulted or Unknown (not yet reported); none without a GPU."),
    ] = None
    gpu_fault: Annotated[
        str | None, Field(description="The GPU fault the worker reported (Xid, ECC, lost).")
    ] = None


class GpuFault(ApiModel):
    """A GPU fault that made the operator replace a worker pod."""

    node: Annotated[str | None, Field(description="Node of the faulty GPU.")] = None
    gpu_uuid: Annotated[str | None, Field(description="UUID of the faulty GPU.")] = None
    pod: Annotated[str, Field(description="The pod that was replaced.")]
    replica: Annotated[int, Field(description="Its replica index.")] = 0
    reason: Annotated[str, Field(description="The worker's reason (e.g. GPU lost: Xid 79).")]
    at: Annotated[str | None, Field(description="When it was seen (RFC 3339).")] = None


class AutoscalingSignals(ApiModel):
    """The routers' load signals behind the last autoscaling evaluation."""

    routers: Annotated[int, Field(description="Routers that answered.")] = 0
    in_flight: Annotated[int, Field(description="Requests in flight to workers.")] = 0
    queued: Annotated[
        int, Field(description="Requests waiting in the routers' queues (held ones too).")
    ] = 0
    ready_replicas: Annotated[int, Field(description="Workers in rotation.")] = 0
    per_replica: Annotated[
        float | None,
        Field(description="(inFlight + queued) / ready workers; None with no ready worker."),
    ] = None
    ttft_p90_ms: Annotated[
        float | None, Field(description="TTFT p90 over the routers' window.")
    ] = None
    idle_seconds: Annotated[
        float | None, Field(description="Seconds since the last request reached a router.")
    ] = None


class ScalingDecision(ApiModel):
    """One change of replicas made by the autoscaler."""

    time: Annotated[str | None, Field(description="When (RFC 3339).")] = None
    from_replicas: Annotated[int, Field(description="replicas before.")] = 0
    to_replicas: Annotated[int, Field(description="replicas after.")] = 0
    reason: Annotated[
        str, Field(description="CamelCase reason, e.g. InFlightAboveTarget, Idle.")
    ] = ""
    message: Annotated[str, Field(description="Why, with the signal values.")] = ""


class AutoscalingStatus(ApiModel):
    """What the autoscaler sees and wants (spec.autoscaling)."""

    desired_replicas: Annotated[
        int, Field(description="Replicas the autoscaler wants now (spec.replicas follows).")
    ] = 0
    current_replicas: Annotated[int, Field(description="Worker pods that exist.")] = 0
    recommendation: Annotated[
        int, Field(description="Replicas the signals ask for, before windows and limits.")
    ] = 0
    reason: Annotated[
        str, Field(description="Why desired is what it is (e.g. StabilizingDown, Steady).")
    ] = ""
    message: Annotated[str, Field(description="The current evaluation, in words.")] = ""
    signals: Annotated[
        AutoscalingSignals | None, Field(description="Signal values of the last evaluation.")
    ] = None
    last_decision: Annotated[
        ScalingDecision | None, Field(description="The last change of replicas.")
    ] = None


class InferenceServiceStatus(ApiModel):
    """What the operator observed and decided.

    Read leniently (unknown keys are ignored): only the operator writes
    status, and an older or newer operator may know other fields.
    """

    model_config = ApiModel.model_config | {"extra": "ignore"}

    observed_generation: Annotated[
        int | None, Field(description="metadata.generation last reconciled.")
    ] = None
    phase: Annotated[Phase, Field(description="One-word summary.")] = Phase.PENDING
    conditions: Annotated[list[Condition], Field(description="Ready, Progressing, ...")] = Field(
        default_factory=list
    )
    replicas: Annotated[int, Field(description="Worker pods that exist.")] = 0
    ready_replicas: Annotated[int, Field(description="Worker pods in rotation.")] = 0
    updated_replicas: Annotated[int, Field(description="Worker pods of the newest revision.")] = 0
    ready_text: Annotated[str, Field(description="ready/desired, for kubectl get.")] = "0/0"
    selector: Annotated[
        str | None, Field(description="Label selector of the worker pods (scale subresource).")
    ] = None
    stable_revision: Annotated[str | None, Field(description="Revision serving by default.")] = None
    canary_revision: Annotated[str | None, Field(description="Revision being rolled out.")] = None
    canary_weight: Annotated[
        int, Field(ge=0, le=100, description="Percent of traffic to the canary.")
    ] = 0
    rollout: Annotated[RolloutStatus, Field(description="Canary state machine.")] = Field(
        default_factory=RolloutStatus
    )
    revision_history: Annotated[
        list[RevisionRecord], Field(description="Past revisions, newest last.")
    ] = Field(default_factory=list)
    replica_statuses: Annotated[
        list[ReplicaStatus], Field(description="One row per worker pod.")
    ] = Field(default_factory=list)
    gpu_faults: Annotated[
        list[GpuFault],
        Field(max_length=20, description="The last GPU faults that replaced a pod, newest last."),
    ] = Field(default_factory=list)
    router_endpoint: Annotated[str | None, Field(description="URL of the router Service.")] = None
    warnings: Annotated[list[str], Field(description="Things worth a look.")] = Field(
        default_factory=list
    )
    autoscaling: Annotated[
        AutoscalingStatus | None,
        Field(description="The autoscaler's view (only with spec.autoscaling)."),
    ] = None
