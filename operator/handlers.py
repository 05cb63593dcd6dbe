"""Every kopf decorator of the operator, and nothing else.

Level-based: one daemon per InferenceService runs the reconcile loop (the
only writer for that object, so no locks), and watch events only wake it
up early. Pods and nodes are kept in kopf indexes as small parsed records,
so a reconcile reads no lists from the API server.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.events import COMPONENT
from kubeinfer.operator.kube import KubeClient
from kubeinfer.operator.metrics import EVENTS, RECONCILE_SECONDS, RECONCILES
from kubeinfer.operator.observe import NodeInfo, PodInfo, observe_node, observe_pod
from kubeinfer.operator.plan import Event
from kubeinfer.operator.reconciler import OperatorContext, reconcile, report_refusal
from kubeinfer.operator.retry import refusal, report_now, retry_delay
from kubernetes_asyncio.client.exceptions import ApiException

logger = logging.getLogger(__name__)
Key = tuple[str, str]


def _wakeup(memo: Any, key: Key) -> asyncio.Event:
    # kopf hands every object a shallow copy of the operator's memo, so the
    # dict must be in that memo before any object is seen (on startup) for a
    # pod's handler and its service's daemon to share it.
    wakeups: dict[Key, asyncio.Event] = memo["wakeups"]
    return wakeups.setdefault(key, asyncio.Event())


@kopf.on.startup()
async def on_operator_startup(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.peering.standalone = True
    # Handler progress in annotations under our own prefix; status is ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    options = memo["options"]
    if options.identity:
        # Events say which of the elected replicas posted them.
        settings.posting.reporting_instance = options.identity
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    memo["wakeups"] = {}
    memo["ctx"] = OperatorContext(
        kube=await KubeClient.connect(fence=options.fence),
        http=aiohttp.ClientSession(),
        images=options.images,
        resync_seconds=options.resync_seconds,
        fleet=options.fleet,
        identity=options.identity or COMPONENT,
    )


@kopf.on.cleanup()
async def on_operator_cleanup(*, memo: Any, **_: Any) -> None:
    ctx: OperatorContext = memo["ctx"]
    await ctx.http.close()
    await ctx.kube.close()


@kopf.index("pods", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SERVICE: kopf.PRESENT})
def pods_by_service(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Key, PodInfo]:
    return {(namespace or "", labels[c.LABEL_SERVICE]): observe_pod(dict(body))}


@kopf.index("nodes")
def nodes_by_name(*, name: str, body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
    return {name: observe_node(dict(body))}


@kopf.on.event(
    "pods",
    labels={c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SERVICE: kopf.PRESENT},
    id="wake-on-pod",
)
async def on_pod_event(
    *, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    # async: kopf runs sync handlers in a thread pool, and asyncio.Event
    # may only be set from the event loop's thread.
    _wakeup(memo, (namespace or "", labels[c.LABEL_SERVICE])).set()


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, id="wake-on-change")
async def on_inference_service_event(
    *, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    _wakeup(memo, (namespace or "", name)).set()


# kopf's DaemonFn protocol lists only its own keyword arguments, not the
# indexes it also passes by name; hence the one ignore.
@kopf.daemon(  # type: ignore[arg-type]
    c.GROUP, c.VERSION, c.PLURAL, id="reconcile", cancellation_timeout=10
)
async def reconcile_inference_service(
    *,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    # kopf passes every index as a keyword argument named after its function.
    pods_by_service: kopf.Index[Key, PodInfo],
    nodes_by_name: kopf.Index[str, NodeInfo],
    **_: Any,
) -> None:
    ctx: OperatorContext = memo["ctx"]
    key = (namespace or "", name)
    wake = _wakeup(memo, key)

    def emit(_: dict[str, Any], event: Event) -> None:
        EVENTS.labels(event.reason).inc()
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    failures = 0  # failed passes in a row
    refusals = 0  # refused passes in a row (403/422)
    while not stopped:
        wake.clear()
        nodes = {n: info for n, store in nodes_by_name.items() for info in store}
        pods = list(pods_by_service.get(key, []))
        try:
            with RECONCILE_SECONDS.time():
                delay = await reconcile(ctx, dict(body), pods=pods, nodes=nodes, emit=emit)
            RECONCILES.labels("ok").inc()
            failures = refusals = 0
        except (ApiException, aiohttp.ClientError, TimeoutError) as error:
            RECONCILES.labels("error").inc()
            failures += 1
            # The next pass starts from what is observed then, so nothing is
            # lost by retrying; backing off spares an API server in trouble.
            delay = retry_delay(failures)
            refused = refusal(error.status, error.body) if isinstance(error, ApiException) else None
            refusals = refusals + 1 if refused is not None else 0
            if refused is None:
                logger.warning(
                    "%s/%s: reconcile failed, retrying in %.0f s: %s",
                    namespace, name, delay, error,
                )  # fmt: skip
            else:
                logger.warning("%s/%s: %s: %s", namespace, name, refused.reason, refused.message)
                # Retrying can't fix it until a person acts: say so once,
                # when it is not the moment after an API server restart.
                if report_now(refusals):
                    with contextlib.suppress(ApiException, aiohttp.ClientError, TimeoutError):
                        await report_refusal(ctx, dict(body), refused, emit)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
    # Deleted (or no longer ours): its gauges go with it.
    ctx.fleet.forget(*key)
