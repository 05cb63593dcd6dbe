"""The routing table the routers watch, and the ConfigMap that carries it."""

import json
from dataclasses import dataclass
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.api.routing import (
    ROUTES_CONFIGMAP_KEY,
    Backend,
    RoutingTable,
    routes_configmap_name,
)
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.builders.common import child_metadata, component_labels
from kubeinfer.operator.builders.worker import startup_budget_seconds


@dataclass(frozen=True)
class RouteTarget:
    """A worker pod that may receive traffic."""

    pod: str
    ip: str
    revision: str
    draining: bool = False
    has_gpu: bool = True


def max_concurrency(spec: InferenceServiceSpec) -> int | None:
    """In-flight requests per worker: explicit, else the engine's batch size
    (more would only queue inside vLLM, where the router can't move it)."""
    return spec.routing.max_concurrency_per_worker or spec.model.engine_args.max_num_seqs


def build_routing_table(
    meta: ObjectMeta,
    spec: InferenceServiceSpec,
    *,
    targets: list[RouteTarget],
    revision_weights: dict[str, int],
    generation: int,
) -> RoutingTable:
    """The table for ``targets`` (ready pods only; the caller decides).

    ``revision_weights`` is the traffic split in percent; revisions without
    a ready pod are dropped and the rest renormalised, so the table never
    sends traffic to a revision that cannot take it.
    """
    limit = max_concurrency(spec)
    backends = [
        Backend(
            name=t.pod,
            url=f"http://{t.ip}:{c.WORKER_HTTP_PORT}",
            health_url=f"http://{t.ip}:{c.WORKER_AGENT_PORT}/ready",
            gpu_url=f"http://{t.ip}:{c.WORKER_AGENT_PORT}/gpu" if t.has_gpu else None,
            revision=t.revision,
            draining=t.draining,
            max_concurrency=limit,
        )
        for t in sorted(targets, key=lambda t: t.pod)
    ]
    routing = spec.routing
    return RoutingTable(
        service=meta.name,
        model=spec.model.name,
        generation=generation,
        strategy=routing.strategy,
        backends=backends,
        revision_weights=normalise_weights(
            revision_weights, {t.revision for t in targets if not t.draining}
        ),
        retries=routing.retries,
        request_timeout_seconds=routing.request_timeout_seconds,
        connect_timeout_seconds=routing.connect_timeout_seconds,
        queue_size=queue_size(spec),
        queue_timeout_seconds=routing.queue_timeout_seconds,
        hold_seconds=hold_seconds(spec),
        prefix_length=routing.prefix_length,
        load_factor=routing.load_factor,
    )


# The routers' queue when routing.queueSize is absent. With autoscaling it
# must hold a spike's excess while new workers start: 256 filled in ~7 s of
# a 4x step in bench/autoscaling (10 % of the spike got 429), 1024 held it
# with 0 failed (docs/benchmarks.md, Autoscaling).
DEFAULT_QUEUE_SIZE = 256
DEFAULT_QUEUE_SIZE_AUTOSCALING = 1024


def queue_size(spec: InferenceServiceSpec) -> int:
    if spec.routing.queue_size is not None:
        return spec.routing.queue_size
    return DEFAULT_QUEUE_SIZE if spec.autoscaling is None else DEFAULT_QUEUE_SIZE_AUTOSCALING


# Without autoscaling, routers hold a request this long while no worker can
# take it: a worker restarting after a crash (a few seconds) or a crash-loop
# replacement comes back on its own. bench/chaos with 2 workers killed in
# turn every 10 s: 38 of 8,121 requests failed answering 503 at once, 2 of
# 11,718 holding 10 s (docs/reliability.md).
DEFAULT_HOLD_SECONDS = 10


def hold_seconds(spec: InferenceServiceSpec) -> float:
    """How long routers hold a request while no worker can take it.

    ``routing.holdTimeoutSeconds`` when set. With autoscaling, a request is
    what brings the first worker back, and it must wait for the model to
    load (the worker's load budget). Without it, a short hold that covers a
    worker's restart; both at most the request timeout.
    """
    if spec.routing.hold_timeout_seconds is not None:
        return float(spec.routing.hold_timeout_seconds)
    if spec.autoscaling is None:
        return float(min(DEFAULT_HOLD_SECONDS, spec.routing.request_timeout_seconds))
    return float(min(startup_budget_seconds(spec), spec.routing.request_timeout_seconds))


def normalise_weights(weights: dict[str, int], available: set[str]) -> dict[str, int]:
    """Keep the revisions that have a serving pod and make them add up to 100.

    Empty result: no preference (routers share by capacity).
    """
    kept = {rev: w for rev, w in weights.items() if rev in available and w > 0}
    total = sum(kept.values())
    if not kept or total == 0:
        return {}
    scaled = {rev: w * 100 // total for rev, w in kept.items()}
    # Give the rounding remainder to the heaviest revision.
    heaviest = max(sorted(scaled), key=lambda rev: kept[rev])
    scaled[heaviest] += 100 - sum(scaled.values())
    return scaled


def build_routes_configmap(meta: ObjectMeta, table: RoutingTable) -> dict[str, Any]:
    body = json.dumps(table.to_dict(), sort_keys=True, indent=1)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(
            meta, routes_configmap_name(meta.name), component_labels(meta.name, c.COMPONENT_ROUTER)
        ),
        "data": {ROUTES_CONFIGMAP_KEY: body},
    }
