"""Kubernetes Events the operator posts itself, and the once-only ones.

kopf.event queues an Event and a background task posts it later. For a
rollout transition that is not enough: a leader killed between the status
write that records the transition and that post loses the transition's
Event for good (the status says Failed, no RolledBack Event ever comes),
and posting it before the status write instead would post it twice when
the successor repeats the transition.

So a transition's Event (``plan.Event.key`` set) is posted by the
reconciler itself, awaited, *before* the status write, under a name
derived from the object's uid and the key: the transition's number
(``status.rollout.transitions`` before it) and trigger. A successor that
repeats the transition (the status write never happened) plans from the
same status, posts the same name, and the API server's 409 says it is
there already. The write goes through the operator's fenced client,
so a leader past its renew deadline posts nothing.
"""

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.kube import ConflictError, KubeClient, NotFoundError
from kubeinfer.operator.metrics import EVENTS
from kubeinfer.operator.plan import Event
from kubernetes_asyncio.client.exceptions import ApiException

logger = logging.getLogger(__name__)

COMPONENT = "kubeinfer-operator"
_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
NAME_LIMIT = 253  # a DNS subdomain, as every object name


def event_body(
    involved: dict[str, str],
    event: Event,
    *,
    instance: str,
    now: datetime,
    name: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved``; ``name`` fixed or generated."""
    stamp = now.astimezone(UTC).strftime(_SECONDS)
    metadata: dict[str, str] = {"namespace": involved["namespace"]}
    if name is None:
        metadata["generateName"] = f"{involved['name']}."
    else:
        metadata["name"] = name
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": metadata,
        "involvedObject": involved,
        "reason": event.reason,
        "message": event.message,
        "type": event.type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def involved(meta: ObjectMeta) -> dict[str, str]:
    """The InferenceService as an Event's involvedObject."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": meta.name,
        "namespace": meta.namespace,
        "uid": meta.uid or "",
    }


def once_name(meta: ObjectMeta, key: str) -> str:
    """The Event's name for transition ``key`` of this object (this uid:
    a deleted and re-created service starts afresh)."""
    digest = hashlib.sha256(f"{meta.uid or ''}/{key}".encode()).hexdigest()[:16]
    # Object names go up to 253 characters, and so may the Event's.
    return f"{meta.name[: NAME_LIMIT - len(digest) - 1]}.{digest}"


async def post_once(kube: KubeClient, meta: ObjectMeta, event: Event, *, instance: str) -> bool:
    """Post a keyed Event about the InferenceService ``meta`` unless it
    exists; True when this call posted it.

    A refusal (403 in a terminating namespace, 429 from an event rate
    limit) or a namespace gone loses the Event with a warning rather than
    hold the rollout up;
    a connection error propagates: the reconcile fails before its status
    write, and the retry repeats the transition under the same name.
    """
    assert event.key is not None, "only keyed (transition) events are posted once"
    name = once_name(meta, event.key)
    body = event_body(involved(meta), event, instance=instance, now=datetime.now(UTC), name=name)
    try:
        await kube.create(body)
    except ConflictError:
        logger.info("%s/%s %s: posted before", meta.namespace, meta.name, event.reason)
        return False
    except NotFoundError:
        logger.warning("%s/%s: %s event: no namespace", meta.namespace, meta.name, event.reason)
        return False
    except ApiException as refused:
        logger.warning(
            "%s/%s: the %s event was refused (%s): %s",
            meta.namespace, meta.name, event.reason, refused.status, refused.reason,
        )  # fmt: skip
        return False
    EVENTS.labels(event.reason).inc()
    return True
