"""A rollout transition's Event, posted once whichever leader makes it
(kubeinfer.operator.events), on the real API server with the operator's
own least-privilege identity.

The e2e test that found this (test_leader_killed_at_each_rollout_phase)
killed the leader between the status write recording RolledBack and
kopf's queued post of its Event: the Event was never posted. Now the Event
goes first, under a name derived from the transition, and a successor
that repeats the transition gets the API server's 409.
"""

from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster.client import KubeClient as AdminClient
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.events import once_name, post_once
from kubeinfer.operator.kube import KubeClient
from kubeinfer.operator.plan import Event
from kubernetes_asyncio import config

pytestmark = pytest.mark.cluster


class FencedError(Exception):
    pass


def events_about(kube: AdminClient, namespace: str, uid: str) -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in items if e["involvedObject"].get("uid") == uid]


async def test_a_repeated_transition_posts_its_event_once(
    kube: AdminClient, namespace: str, operator_identity: Path
) -> None:
    meta = ObjectMeta(name="llm", namespace=namespace, uid="5e1c0a4e-uid-of-llm")
    rolled_back = Event("Warning", "RolledBack", "rolled back to abc", key="7-RolledBack")
    api = await config.new_client_from_config(config_file=str(operator_identity))
    leader, successor = KubeClient(api), KubeClient(api)
    try:
        # The leader posts, then (killed) never writes the status; the
        # successor repeats the same transition from the same status.
        assert await post_once(leader, meta, rolled_back, instance="op-a")
        assert not await post_once(successor, meta, rolled_back, instance="op-b")
        # The next transition is news.
        failed = Event("Normal", "NewRevision", "rolling out def", key="8-NewRevision")
        assert await post_once(successor, meta, failed, instance="op-b")
    finally:
        await api.close()
    posted = events_about(kube, namespace, meta.uid or "")
    assert sorted((e["reason"], e.get("count"), e["reportingInstance"]) for e in posted) == [
        ("NewRevision", 1, "op-b"),
        ("RolledBack", 1, "op-a"),
    ]
    names = {e["reason"]: e["metadata"]["name"] for e in posted}
    assert names["RolledBack"] == once_name(meta, "7-RolledBack")
    rolled = next(e for e in posted if e["reason"] == "RolledBack")
    assert (rolled["type"], rolled["message"], rolled["involvedObject"]["kind"]) == (
        "Warning",
        "rolled back to abc",
        "InferenceService",
    )


async def test_the_same_key_of_another_object_is_another_event(
    kube: AdminClient, namespace: str, operator_identity: Path
) -> None:
    # A deleted and re-created service (new uid) starts its count afresh.
    old = ObjectMeta(name="llm", namespace=namespace, uid="uid-before")
    new = ObjectMeta(name="llm", namespace=namespace, uid="uid-after")
    created = Event("Normal", "Created", "serving revision abc", key="Created")
    api = await config.new_client_from_config(config_file=str(operator_identity))
    client = KubeClient(api)
    try:
        assert await post_once(client, old, created, instance="op")
        assert await post_once(client, new, created, instance="op")
    finally:
        await api.close()
    assert len(events_about(kube, namespace, "uid-before")) == 1
    assert len(events_about(kube, namespace, "uid-after")) == 1


async def test_a_fenced_leader_posts_nothing(
    kube: AdminClient, namespace: str, operator_identity: Path
) -> None:
    def fence() -> None:
        raise FencedError("past the renew deadline")

    meta = ObjectMeta(name="llm", namespace=namespace, uid="uid-fenced")
    event = Event("Normal", "Promoted", "revision abc promoted", key="3-Promoted")
    api = await config.new_client_from_config(config_file=str(operator_identity))
    try:
        with pytest.raises(FencedError):
            await post_once(KubeClient(api, fence=fence), meta, event, instance="x")
    finally:
        await api.close()
    assert events_about(kube, namespace, "uid-fenced") == []


async def test_a_refused_or_unplaceable_event_is_lost_with_a_warning_not_raised(
    kube: AdminClient, namespace: str, operator_identity: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An Event must not hold a rollout up: a namespace gone (404) or being
    # deleted (403 from the NamespaceLifecycle admission) is logged.
    gone = ObjectMeta(name="llm", namespace=f"{namespace}-gone", uid="uid-gone")
    ending = ObjectMeta(name="llm", namespace=f"{namespace}-ending", uid="uid-ending")
    hold = f"/api/v1/namespaces/{ending.namespace}/configmaps/hold"
    kube.create("/api/v1/namespaces", {"metadata": {"name": ending.namespace}})
    # A finalizer keeps the namespace Terminating until the test lets go.
    kube.create(
        f"/api/v1/namespaces/{ending.namespace}/configmaps",
        {"metadata": {"name": "hold", "finalizers": ["kubeinfer.io/test-hold"]}},
    )
    kube.delete(f"/api/v1/namespaces/{ending.namespace}")
    event = Event("Normal", "Promoted", "revision abc promoted", key="3-Promoted")
    api = await config.new_client_from_config(config_file=str(operator_identity))
    client = KubeClient(api)
    try:
        assert not await post_once(client, gone, event, instance="op")
        assert not await post_once(client, ending, event, instance="op")
    finally:
        await api.close()
        kube.merge_patch(hold, {"metadata": {"finalizers": None}})
    assert "Promoted event: no namespace" in caplog.text
    assert "the Promoted event was refused (403)" in caplog.text


def test_a_long_name_gives_a_valid_event_name() -> None:
    meta = ObjectMeta(name="m" * 253, namespace="ns", uid="u")
    name = once_name(meta, "0-NewRevision")
    assert len(name) == 253
    assert name != once_name(meta, "1-StepReady")
    assert name.startswith("m" * 236 + ".")
