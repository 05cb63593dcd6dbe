"""One reconcile of one InferenceService: observe, plan (pure), act.

The order of the actions is what keeps clients safe: the routing table is
published before any pod is drained or deleted, so routers stop sending to
a pod before it starts to go away.
"""

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubeinfer.operator.analysis import RouterStats
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import (
    InferenceService,
    InvalidSpecError,
    parse_inference_service,
)
from kubeinfer.operator.api.routing import ROUTES_CONFIGMAP_KEY, routes_configmap_name
from kubeinfer.operator.api.status import (
    ConditionStatus,
    ConditionType,
    InferenceServiceStatus,
    Phase,
    RolloutPhase,
)
from kubeinfer.operator.autoscale import ScaleDecision, ScaleInput, decide
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.revision import compute_revision, revision_template
from kubeinfer.operator.builders.router import (
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_worker_network_policy,
    router_endpoint,
)
from kubeinfer.operator.builders.routing import build_routes_configmap, build_routing_table
from kubeinfer.operator.builders.worker import build_worker_pod, worker_image
from kubeinfer.operator.conditions import set_condition
from kubeinfer.operator.events import COMPONENT, post_once
from kubeinfer.operator.kube import ConflictError, KubeClient, NotFoundError
from kubeinfer.operator.metrics import FleetCollector
from kubeinfer.operator.observe import NodeInfo, PodInfo, format_time
from kubeinfer.operator.plan import Event, Observed, Plan, plan_reconcile, spec_warnings
from kubeinfer.operator.retry import Refusal
from kubeinfer.operator.routerstats import fetch_router_stats
from kubeinfer.operator.scaling import (
    AutoscalerMemory,
    decision_event,
    forget,
    record,
    scale_input,
    with_written_replicas,
    write_replicas,
)
from pydantic import ValidationError

logger = logging.getLogger(__name__)
EVALUATION_SLACK_SECONDS = 0.1
EmitEvent = Callable[[dict[str, Any], Event], None]


@dataclass
class OperatorContext:
    """What the operator shares between reconciles (kept in kopf's memo)."""

    kube: KubeClient
    http: aiohttp.ClientSession
    images: Images
    resync_seconds: float = 10.0
    # The per-InferenceService gauges of /metrics (see kubeinfer.operator.metrics).
    fleet: FleetCollector = field(default_factory=FleetCollector)
    # Hashes of what was last applied per object, so a steady state costs
    # no writes. Lost on restart: the first reconcile then re-applies
    # (server-side apply makes that a no-op).
    applied: dict[tuple[str, str, str], str] = field(default_factory=dict)
    generations: dict[tuple[str, str], int] = field(default_factory=dict)
    tables: dict[tuple[str, str], str] = field(default_factory=dict)
    # Pods created but not yet seen in the watch (namespace, name) -> when,
    # like the ReplicaSet controller's expectations: a reconcile that runs
    # before the watch catches up must not create them again (a 409 each,
    # which cost a busy API server as much as the create).
    unseen_creates: dict[tuple[str, str], float] = field(default_factory=dict)
    # The status we last wrote per object, with the resourceVersion the
    # object had before that write: a wake-up can come before the watch
    # delivers our own write, and planning on the older status would
    # repeat a transition (and its event).
    # (Several versions when our own scale write came first: the watch may
    # deliver the object from before it, or from after it.)
    written: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, Any]]] = field(
        default_factory=dict
    )
    autoscaler: AutoscalerMemory = field(default_factory=AutoscalerMemory)
    # When each service's routers were last asked for their workers' GPU
    # reports (the inventory in status; see GPU_REFRESH_SECONDS).
    gpu_read_at: dict[tuple[str, str], float] = field(default_factory=dict)
    # reportingInstance of the Events posted here (leader election's identity).
    identity: str = COMPONENT


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


async def _apply_once(ctx: OperatorContext, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    key = (obj["kind"], meta["namespace"], meta["name"])
    digest = _digest(obj)
    if ctx.applied.get(key) == digest:
        return
    await ctx.kube.apply(obj)
    ctx.applied[key] = digest


async def _apply_router(ctx: OperatorContext, isvc: InferenceService) -> None:
    meta, spec = isvc.metadata, isvc.spec
    for obj in (
        build_router_service_account(meta),
        build_router_role(meta),
        build_router_role_binding(meta),
        build_router_service(meta),
        build_worker_network_policy(meta),
        build_router_deployment(meta, spec, images=ctx.images),
    ):
        await _apply_once(ctx, obj)


async def _publish_table(ctx: OperatorContext, isvc: InferenceService, plan: Plan) -> None:
    meta = isvc.metadata
    key = (meta.namespace, meta.name)
    if key not in ctx.generations:
        try:
            current = await ctx.kube.get(
                "ConfigMap", meta.namespace, routes_configmap_name(meta.name)
            )
            doc = json.loads(current.get("data", {}).get(ROUTES_CONFIGMAP_KEY, "{}"))
            ctx.generations[key] = int(doc.get("generation", 0))
            ctx.tables[key] = _digest({k: v for k, v in doc.items() if k != "generation"})
        except (NotFoundError, ValueError):
            ctx.generations[key] = 0
    table = build_routing_table(
        meta,
        isvc.spec,
        targets=plan.targets,
        revision_weights=plan.weights,
        generation=ctx.generations[key],
    )
    content = _digest({k: v for k, v in table.to_dict().items() if k != "generation"})
    if ctx.tables.get(key) == content:
        return
    table = table.model_copy(update={"generation": ctx.generations[key] + 1})
    await ctx.kube.apply(build_routes_configmap(meta, table))
    ctx.generations[key] = table.generation
    ctx.tables[key] = content


# GPU facts in status (memory in use, health) are refreshed this often; a
# new pod without facts yet is asked for at every reconcile.
GPU_REFRESH_SECONDS = 15.0


def _gpu_report_due(
    ctx: OperatorContext, isvc: InferenceService, workers: list[PodInfo], now: float
) -> bool:
    key = (isvc.metadata.namespace, isvc.metadata.name)
    if now - ctx.gpu_read_at.get(key, 0.0) >= GPU_REFRESH_SECONDS:
        return True
    known = {r.pod for r in isvc.status.replica_statuses if r.gpu_uuid}
    return any(p.ready and p.has_gpu and p.name not in known for p in workers)


# After this long an unseen create is presumed lost and may be sent again.
UNSEEN_CREATE_SECONDS = 30.0


async def _create_pod(ctx: OperatorContext, pod: dict[str, Any], now: float) -> None:
    key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
    created = ctx.unseen_creates.get(key)
    if created is not None and now - created < UNSEEN_CREATE_SECONDS:
        return
    ctx.unseen_creates[key] = now
    try:
        await ctx.kube.create(pod)
    except ConflictError:
        # Created by an earlier reconcile whose watch event has not
        # reached our index yet: the deterministic name makes it safe.
        logger.debug("pod %s exists already", key[1])
    except BaseException:
        # A concurrent reconcile may have dropped the key already (it saw an
        # older pod of the same name, being deleted): pop, don't del, or a
        # refused create (403 while the API server's RBAC cache warms up
        # after a restart) turns into a KeyError that stops the daemon.
        ctx.unseen_creates.pop(key, None)
        raise


async def _act_on_pods(
    ctx: OperatorContext, isvc: InferenceService, plan: Plan, now: float
) -> None:
    """Drains, then deletes, then creates; each group concurrently (a
    service of 8 replicas is 8 round trips at once, not one after another)."""
    meta = isvc.metadata
    patch = {"metadata": {"annotations": {c.ANNOTATION_DRAINING: format_time(now)}}}

    async def drain(name: str) -> None:
        try:
            await ctx.kube.merge_patch("Pod", meta.namespace, name, patch)
        except NotFoundError:
            return

    await asyncio.gather(*(drain(name) for name in plan.drain))
    await asyncio.gather(
        *(
            ctx.kube.delete("Pod", meta.namespace, gone.name, grace=0 if gone.immediate else None)
            for gone in plan.delete
        )
    )
    pods = [
        build_worker_pod(
            meta,
            isvc.spec,
            revision=new.revision,
            replica=new.replica,
            images=ctx.images,
            replaces=new.replaces,
            failures=new.failures,
            avoid_nodes=new.avoid_nodes,
            exclude_nodes=new.exclude_nodes,
        )
        for new in plan.create
    ]
    await asyncio.gather(*(_create_pod(ctx, pod, now) for pod in pods))


async def _write_status(
    ctx: OperatorContext, isvc: InferenceService, status: InferenceServiceStatus
) -> None:
    new = status.model_dump(mode="json", by_alias=True)
    old = isvc.status.model_dump(mode="json", by_alias=True)
    if new == old:
        return
    meta = isvc.metadata
    result = await ctx.kube.merge_patch(
        c.KIND, meta.namespace, meta.name, {"status": new}, sub="status"
    )
    key = (meta.namespace, meta.name)
    scaled = ctx.autoscaler.written.get(key)
    ctx.written[key] = (
        stale_versions(
            ctx.written.get(key),
            seen=meta.resource_version or "",
            produced=(result.get("metadata") or {}).get("resourceVersion") or "",
            scaled=scaled[0] if scaled is not None else None,
        ),
        new,
    )


def stale_versions(
    previous: tuple[tuple[str, ...], dict[str, Any]] | None,
    *,
    seen: str,
    produced: str,
    scaled: str | None,
) -> tuple[str, ...]:
    """The versions of an object that predate (or are) our latest status write.

    ``seen``: the version we planned on; ``produced``: the one our write
    made (a body at it carries the status we wrote anyway). When we wrote
    twice before the watch caught up (``previous`` still held), the first
    write's versions stay stale: a body at one of them would otherwise
    undo the second write and repeat its transition. The produced version
    comes last."""
    versions = [*(previous[0] if previous else ()), seen]
    if scaled is not None:
        versions.append(scaled)
    # Last: latest_body forgets the entry once the watch delivers it.
    versions.append(produced)
    return tuple(v for v in dict.fromkeys(versions) if v)


def latest_body(
    written: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, Any]]], body: dict[str, Any]
) -> dict[str, Any]:
    """``body``, with the status we wrote if the watch has not caught up
    (the object still has a resourceVersion from before our write; the
    last of the stale versions is the one our write produced).
    Forgets the written status once the watch has moved on."""
    meta = body.get("metadata") or {}
    key = (meta.get("namespace", ""), meta.get("name", ""))
    if key not in written:
        return body
    stale_versions, status = written[key]
    version = meta.get("resourceVersion")
    if version not in stale_versions or version == stale_versions[-1]:
        # Moved on, or caught up with our latest write (its status is ours).
        del written[key]
        return body
    return {**body, "status": status}


async def reconcile(
    ctx: OperatorContext,
    body: dict[str, Any],
    *,
    pods: Iterable[PodInfo],
    nodes: dict[str, NodeInfo],
    emit: EmitEvent,
) -> float:
    """Reconcile one InferenceService; returns seconds until the next look."""
    now = time.time()
    try:
        isvc = parse_inference_service(latest_body(ctx.written, body))
    except InvalidSpecError as error:
        await _report_invalid(ctx, body, str(error), emit, now)
        return ctx.resync_seconds
    service_pods = list(pods)
    for seen in service_pods:
        ctx.unseen_creates.pop((seen.namespace, seen.name), None)
    workers = [p for p in service_pods if p.component == c.COMPONENT_WORKER]
    routers = [p for p in service_pods if p.component == c.COMPONENT_ROUTER]
    router_ips = [p.ip for p in routers if p.ready and p.ip and not p.deleting]
    draining = any(p.draining_since is not None for p in workers)
    analysing = isvc.status.rollout.phase is RolloutPhase.ANALYSING
    isvc = with_written_replicas(ctx.autoscaler, isvc)
    scaling = isvc.spec.autoscaling
    key = (isvc.metadata.namespace, isvc.metadata.name)
    # A little early is on time: the loop's own wake-up jitters by milliseconds.
    evaluate = scaling is not None and (
        now - ctx.autoscaler.last_evaluation.get(key, 0.0)
        >= scaling.interval_seconds - EVALUATION_SLACK_SECONDS
    )
    gpus_due = _gpu_report_due(ctx, isvc, workers, now)
    wanted = analysing or draining or evaluate or gpus_due
    stats = await fetch_router_stats(ctx.http, router_ips) if wanted else None
    if stats is not None and gpus_due:
        ctx.gpu_read_at[key] = now
    scaled: tuple[ScaleInput, ScaleDecision, int | None] | None = None
    if evaluate:
        isvc, scaled = await _autoscale(ctx, isvc, workers, nodes, stats, now, emit, body)
    observed = Observed(
        pods=workers,
        nodes=nodes,
        stats=stats,
        routers_ready=len(router_ips),
        now=now,
        warnings=spec_warnings(isvc.spec, nodes),
        gpus=stats.gpus if stats else {},
    )
    plan = plan_reconcile(
        isvc,
        revision=compute_revision(isvc.spec, worker_image(isvc.spec, ctx.images)),
        template=revision_template(isvc.spec),
        observed=observed,
    )
    plan.status.router_endpoint = router_endpoint(isvc.metadata)
    if scaling is None:
        plan.status.autoscaling = None
        forget(ctx.autoscaler, key)
    elif scaled is not None:
        record(isvc, plan.status, *scaled, now)
    await _apply_router(ctx, isvc)
    await _publish_table(ctx, isvc, plan)
    await _act_on_pods(ctx, isvc, plan, now)
    meta = isvc.metadata
    # Transitions' Events before the status that records them: see events.py.
    for event in plan.events:
        if event.key is not None:
            logger.info("%s/%s %s: %s", meta.namespace, meta.name, event.reason, event.message)
            await post_once(ctx.kube, meta, event, instance=ctx.identity)
    await _write_status(ctx, isvc, plan.status)
    ctx.fleet.record(meta.namespace, meta.name, isvc.spec.replicas, plan.status)
    for event in plan.events:
        if event.key is None:
            logger.info("%s/%s %s: %s", meta.namespace, meta.name, event.reason, event.message)
            emit(body, event)
    if plan.clear_command:
        patch = {"metadata": {"annotations": {c.ANNOTATION_ROLLOUT: None}}}
        await ctx.kube.merge_patch(c.KIND, isvc.metadata.namespace, isvc.metadata.name, patch)
    delay = plan.requeue_seconds or ctx.resync_seconds
    if scaling is not None:
        due = ctx.autoscaler.last_evaluation.get(key, now) + scaling.interval_seconds
        delay = min(delay, max(EVALUATION_SLACK_SECONDS, due - time.time()))
    return delay


async def _autoscale(
    ctx: OperatorContext,
    isvc: InferenceService,
    workers: list[PodInfo],
    nodes: dict[str, NodeInfo],
    stats: RouterStats | None,
    now: float,
    emit: EmitEvent,
    body: dict[str, Any],
) -> tuple[InferenceService, tuple[ScaleInput, ScaleDecision, int | None]]:
    """One autoscaling evaluation; returns ``isvc`` with the replicas decided."""
    memory, meta = ctx.autoscaler, isvc.metadata
    key = (meta.namespace, meta.name)
    inp = scale_input(isvc, workers, nodes, stats, memory.history.get(key, ()), now)
    decision = decide(inp)
    memory.history[key] = decision.history
    memory.last_evaluation[key] = now
    current = isvc.spec.replicas
    if not decision.changed(current):
        return isvc, (inp, decision, None)
    version = await write_replicas(ctx.kube, isvc, decision.desired)
    memory.written[key] = (meta.resource_version or "", decision.desired)
    # The status written below must be matched against the version after
    # this write: the watch may deliver it before the status write, and
    # planning on that body's older status would undo the decision's record.
    if version is not None:
        meta = meta.model_copy(update={"resource_version": version})
    event = decision_event(current, decision)
    logger.info("%s/%s %s: %s", meta.namespace, meta.name, event.reason, event.message)
    emit(body, event)
    spec = isvc.spec.model_copy(update={"replicas": decision.desired})
    return isvc.model_copy(update={"spec": spec, "metadata": meta}), (inp, decision, current)


async def _report_invalid(
    ctx: OperatorContext, body: dict[str, Any], message: str, emit: EmitEvent, now: float
) -> None:
    """A spec the API server accepted but that can never work (rules only
    the operator can check): say so in status and an event, once."""
    meta = body.get("metadata") or {}
    raw_status = body.get("status") or {}
    try:
        status = InferenceServiceStatus.model_validate(raw_status)
    except ValidationError:
        status = InferenceServiceStatus()
    before = status.model_dump(mode="json", by_alias=True)
    status.phase = Phase.FAILED
    status.observed_generation = meta.get("generation")
    status.conditions = set_condition(
        status.conditions,
        ConditionType.READY,
        ConditionStatus.FALSE,
        "InvalidSpec",
        message,
        now=now,
        generation=meta.get("generation"),
    )
    after = status.model_dump(mode="json", by_alias=True)
    if before == after:
        return
    await ctx.kube.merge_patch(
        c.KIND, meta.get("namespace", ""), meta.get("name", ""), {"status": after}, sub="status"
    )
    emit(body, Event("Warning", "InvalidSpec", message))


async def report_refusal(
    ctx: OperatorContext, body: dict[str, Any], refused: Refusal, emit: EmitEvent
) -> None:
    """The API server refused what the operator asked (403: a permission it
    lacks, a quota; 422: an object it refuses): Degraded with the API
    server's words, and one Warning event when that is news. The next
    successful pass recomputes the conditions from what it observes."""
    now = time.time()
    meta = body.get("metadata") or {}
    try:
        status = InferenceServiceStatus.model_validate(
            latest_body(ctx.written, body).get("status") or {}
        )
    except ValidationError:
        status = InferenceServiceStatus()
    before = status.model_dump(mode="json", by_alias=True)
    status.conditions = set_condition(
        status.conditions,
        ConditionType.DEGRADED,
        ConditionStatus.TRUE,
        refused.reason,
        refused.message,
        now=now,
        generation=meta.get("generation"),
    )
    status.phase = Phase.DEGRADED
    after = status.model_dump(mode="json", by_alias=True)
    if before == after:
        return
    emit(body, Event("Warning", refused.reason, refused.message))
    await ctx.kube.merge_patch(
        c.KIND, meta.get("namespace", ""), meta.get("name", ""), {"status": after}, sub="status"
    )
