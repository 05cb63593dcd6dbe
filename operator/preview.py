"""What the operator would do with an InferenceService (pure), for
`kubectl kubeinfer preview`.

Nothing here is a copy of the operator: the revision is the operator's
hash, the next actions are `plan.plan_reconcile` on what the cluster holds
now, the pods are `builders.worker.build_worker_pod`'s, the warnings are
`plan.spec_warnings`, and `placement` applies those pods' own placement
rules to the nodes. The API server has already validated the object
(server-side dry run) before it gets here.
"""

from dataclasses import dataclass, field
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import InferenceService
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.api.status import InferenceServiceStatus
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.revision import compute_revision, revision_template
from kubeinfer.operator.builders.worker import build_worker_pod, worker_image
from kubeinfer.operator.observe import observe_node, observe_pod
from kubeinfer.operator.placement import (
    NodeState,
    free_gpus,
    gpu_resource,
    node_states,
    place_pods,
    why_not,
)
from kubeinfer.operator.plan import Observed, plan_reconcile, spec_warnings
from kubeinfer.operator.rollout import canary_pods


@dataclass(frozen=True)
class StepPreview:
    weight: int  # canary traffic percent
    canary_pods: int
    stable_pods: int

    @property
    def gpus(self) -> int:
        return self.canary_pods + self.stable_pods


@dataclass(frozen=True)
class PodPreview:
    pod: str
    revision: str
    replica: int
    nodes: tuple[str, ...]  # the best nodes (one of them); empty: cannot be placed now
    why_not: str | None  # why no node fits, summarised


@dataclass
class Preview:
    namespace: str
    name: str
    exists: bool
    revision: str
    stable_revision: str | None
    new_revision: bool
    changed: list[str]
    replicas: tuple[int, int]  # before, after
    rollout: str  # what kind of change, in words
    steps: list[StepPreview] = field(default_factory=list)
    pods: list[PodPreview] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    gpus_needed: int = 0  # the most GPUs the change holds at once
    gpus_free: int = 0  # free GPUs on nodes the pods may use, before the change
    events: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    validation: str = "server-side dry run passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "exists": self.exists,
            "revision": self.revision,
            "stableRevision": self.stable_revision,
            "newRevision": self.new_revision,
            "changed": self.changed,
            "replicas": {"before": self.replicas[0], "after": self.replicas[1]},
            "rollout": self.rollout,
            "steps": [
                {"weight": s.weight, "canaryPods": s.canary_pods, "stablePods": s.stable_pods}
                for s in self.steps
            ],
            "pods": [
                {
                    "pod": p.pod,
                    "revision": p.revision,
                    "replica": p.replica,
                    "nodes": list(p.nodes),
                    "free": bool(p.nodes),
                    "whyNot": p.why_not,
                }
                for p in self.pods
            ],
            "deletes": self.deletes,
            "gpusNeeded": self.gpus_needed,
            "gpusFree": self.gpus_free,
            "events": self.events,
            "warnings": self.warnings,
            "validation": self.validation,
        }


def changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "spec") -> list[str]:
    """Dotted paths where two specs differ (defaults applied to both)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}.{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, path)
        elif a != b:
            out.append(path)
    return out


def rollout_steps(spec: InferenceServiceSpec) -> list[StepPreview]:
    """The canary's steps: pods per revision at each traffic weight, as
    `rollout.desired_counts` sizes them."""
    n, surge = spec.replicas, spec.rollout.max_surge
    steps = []
    for weight in spec.rollout.steps:
        canary = canary_pods(n, weight)
        steps.append(StepPreview(weight, canary, min(n, n + surge - canary)))
    return steps


def _summarise_rejections(rejected: dict[str, str]) -> str:
    if not rejected:
        return "no nodes"
    by_reason: dict[str, list[str]] = {}
    for node, reason in sorted(rejected.items()):
        by_reason.setdefault(reason, []).append(node)
    return "; ".join(f"{', '.join(nodes)}: {reason}" for reason, nodes in by_reason.items())


def _revision(
    spec: InferenceServiceSpec,
    status: InferenceServiceStatus,
    images: Images,
    pods: list[dict[str, Any]],
) -> str:
    """The operator's revision hash. The operator's default image is not
    known here, so a spec whose revisioned fields equal the stable
    revision's gets that revision; otherwise the image of a running worker
    (the operator's default) goes into the hash."""
    template = revision_template(spec)
    for record in status.revision_history:
        if record.revision == status.stable_revision and record.template == template:
            return record.revision
    image = worker_image(spec, images)
    for pod in pods:
        containers = (pod.get("spec") or {}).get("containers") or []
        if containers and not spec.worker.image and not spec.gpu.cpu_only:
            image = containers[0].get("image") or image
            break
    return compute_revision(spec, image)


def preview(
    new: dict[str, Any],
    current: dict[str, Any] | None,
    *,
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    now: float,
    images: Images | None = None,
) -> Preview:
    """What applying ``new`` (the dry-run answer of the API server) would
    do, given ``current`` (the object now, or None), the cluster's nodes
    and its pods (all namespaces: they hold GPUs too).

    Raises pydantic.ValidationError for a spec only the operator rejects.
    """
    images = images or Images()
    body = dict(new)
    body["status"] = (current or {}).get("status") or {}
    isvc = InferenceService.model_validate(body)
    meta, spec = isvc.metadata, isvc.spec
    own = [
        p
        for p in pods
        if p["metadata"].get("namespace") == meta.namespace
        and (p["metadata"].get("labels") or {}).get(c.LABEL_SERVICE) == meta.name
    ]
    own_workers = [
        p
        for p in own
        if (p["metadata"].get("labels") or {}).get(c.LABEL_COMPONENT) == c.COMPONENT_WORKER
    ]
    routers_ready = sum(
        1
        for p in own
        if (p["metadata"].get("labels") or {}).get(c.LABEL_COMPONENT) == c.COMPONENT_ROUTER
        and observe_pod(p).ready
    )
    node_infos = {n["metadata"]["name"]: observe_node(n) for n in nodes}
    revision = _revision(spec, isvc.status, images, own_workers)
    observed = Observed(
        pods=[observe_pod(p) for p in own_workers],
        nodes=node_infos,
        stats=None,
        routers_ready=routers_ready,
        now=now,
        warnings=spec_warnings(spec, node_infos),
    )
    plan = plan_reconcile(
        isvc, revision=revision, template=revision_template(spec), observed=observed
    )
    stable = isvc.status.stable_revision
    old_spec = (current or {}).get("spec")
    changed: list[str] = []
    before = 0
    if current is not None and old_spec is not None:
        old = InferenceServiceSpec.model_validate(old_spec)
        changed = changed_fields(
            old.model_dump(mode="json", by_alias=True), spec.model_dump(mode="json", by_alias=True)
        )
        before = old.replicas
    new_revision = current is not None and stable is not None and revision != stable
    result = Preview(
        namespace=meta.namespace,
        name=meta.name,
        exists=current is not None,
        revision=revision,
        stable_revision=stable,
        new_revision=new_revision,
        changed=changed,
        replicas=(before, spec.replicas),
        rollout="",
        events=[f"{e.reason}: {e.message}" for e in plan.events],
        warnings=list(plan.status.warnings),
    )
    n, surge = spec.replicas, spec.rollout.max_surge
    if current is None or stable is None:
        result.rollout = f"create: {n} worker pod(s) of revision {revision}, serving at once"
        result.gpus_needed = n
    elif new_revision:
        result.steps = rollout_steps(spec)
        how = (
            f"up to {surge} extra GPU(s) (maxSurge)"
            if surge
            else "no extra GPU: old pods are replaced one at a time (maxSurge 0)"
        )
        weights = ", ".join(f"{s.weight}%" for s in result.steps)
        result.rollout = f"canary of revision {revision} at {weights}, with {how}"
        result.gpus_needed = max((s.gpus for s in result.steps), default=n)
    elif changed:
        result.rollout = "in place: no new revision, no pod is replaced" + (
            f"; replicas {before} -> {n}" if before != n else ""
        )
        result.gpus_needed = n
    else:
        result.rollout = "no change"
        result.gpus_needed = n
    _place(result, isvc, plan.create, plan.delete, pods, nodes, images, current is None)
    return result


def _place(
    result: Preview,
    isvc: InferenceService,
    creates: list[Any],
    deletes: list[Any],
    pods: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    images: Images,
    fresh: bool,
) -> None:
    meta, spec = isvc.metadata, isvc.spec
    leaving = {(meta.namespace, d.name) for d in deletes}
    result.deletes = [d.name for d in deletes]
    states = node_states(nodes, pods, leaving)
    built = [
        build_worker_pod(
            meta,
            spec,
            revision=new.revision,
            replica=new.replica,
            images=images,
            replaces=new.replaces,
            failures=new.failures,
            avoid_nodes=new.avoid_nodes,
            exclude_nodes=new.exclude_nodes,
        )
        for new in creates
    ]
    resource = spec.gpu.resource_name
    if built and gpu_resource(built[0]):
        usable = {name: state for name, state in states.items() if _may_use(built[0], state)}
        result.gpus_free = free_gpus(usable, resource)
    placements = place_pods(built, states)
    for new, placement in zip(creates, placements, strict=True):
        result.pods.append(
            PodPreview(
                pod=placement.pod,
                revision=new.revision,
                replica=new.replica,
                nodes=placement.nodes,
                why_not=None if placement.placed else _summarise_rejections(placement.rejected),
            )
        )
    stuck = [p for p in result.pods if not p.nodes]
    if stuck:
        result.warnings.append(
            f"{len(stuck)} of {len(result.pods)} new worker pod(s) cannot be placed now "
            f"(they would stay Pending; which ones is the scheduler's choice): {stuck[0].why_not}"
        )
    surge_gpus = result.gpus_needed - (0 if fresh else result.replicas[0])
    if built and gpu_resource(built[0]) and result.new_revision and surge_gpus > result.gpus_free:
        result.warnings.append(
            f"not enough free GPUs for maxSurge: the rollout holds {result.gpus_needed} GPUs "
            f"at its peak, {surge_gpus} more than now, and {result.gpus_free} are free"
        )


def _may_use(pod: dict[str, Any], state: NodeState) -> bool:
    """The node would take the pod if it had a free GPU."""
    reason = why_not(pod, state)
    return reason is None or reason.startswith("no free")
