"""The leader elector (kubeinfer.operator.leader) against the real API server:
races decided by optimistic concurrency, release, expiry and the fence.

Each candidate has its own clock (a list the test moves), so expiry is
shown without waiting for it; the Lease writes and their conflicts are real.
"""

import asyncio
from typing import Any, NoReturn

import pytest
from kubeinfer.localcluster.client import KubeClient as AdminClient
from kubeinfer.operator.kube import KubeClient
from kubeinfer.operator.leader import LeaderElector, record_from_spec
from kubeinfer.operator.lease import LeaseTimings

pytestmark = pytest.mark.cluster

TIMINGS = LeaseTimings(lease_duration=8, renew_deadline=6, retry_period=1)


class LostError(Exception):
    pass


def lose(reason: str) -> NoReturn:
    raise LostError(reason)


def candidate(api: Any, namespace: str, identity: str, clock: list[float]) -> LeaderElector:
    return LeaderElector(
        KubeClient(api),
        namespace=namespace,
        name="test-lease",
        identity=identity,
        timings=TIMINGS,
        on_lost=lose,
        clock=lambda: clock[0],
    )


def lease(kube: AdminClient, namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/test-lease"
    )
    return result


async def test_races_release_expiry_and_fence(
    kube_api: Any, kube: AdminClient, namespace: str
) -> None:
    clock_a, clock_b = [100.0], [100.0]
    a = candidate(kube_api, namespace, "a", clock_a)
    b = candidate(kube_api, namespace, "b", clock_b)

    # Both find no Lease and create it at once: the API server lets one win.
    won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(won) == [False, True]
    leader, standby = (a, b) if won[0] else (b, a)
    leader_clock, standby_clock = (clock_a, clock_b) if won[0] else (clock_b, clock_a)
    assert record_from_spec(lease(kube, namespace)["spec"]).holder == leader.identity
    assert (leader.leading, standby.leading) == (True, False)

    # The standby waits while the leader renews, however far its clock runs
    # between renewals (each renewal is a change it sees).
    for _ in range(3):
        leader_clock[0] += 1
        standby_clock[0] += 5
        assert await leader.try_acquire_or_renew()
        assert not await standby.try_acquire_or_renew()

    # A graceful stop releases the Lease: the standby takes it at once, and
    # the transition is counted.
    await leader.release()
    assert await standby.try_acquire_or_renew()
    spec = lease(kube, namespace)["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == (standby.identity, 1)

    # The old leader, now a candidate again, sees a live lease: it waits.
    assert not await leader.try_acquire_or_renew()
    # The new leader stops renewing (dead): one lease after the last change
    # the other saw, it takes over.
    leader_clock[0] += TIMINGS.lease_duration - 0.5
    assert not await leader.try_acquire_or_renew()
    leader_clock[0] += 1
    assert await leader.try_acquire_or_renew()
    assert lease(kube, namespace)["spec"]["leaseTransitions"] == 2

    # Fenced: the deposed leader's clock runs past its renew deadline (it was
    # paused); its next write stops it, before anything reaches the API server.
    standby_clock[0] += TIMINGS.renew_deadline
    with pytest.raises(LostError, match="not renewed for"):
        standby.fence()
    assert not standby.leading
    leader.fence()  # renewed just now: may write


async def test_an_expired_lease_goes_to_exactly_one_of_two(
    kube_api: Any, kube: AdminClient, namespace: str
) -> None:
    clock_a, clock_b = [0.0], [0.0]
    a = candidate(kube_api, namespace, "a", clock_a)
    b = candidate(kube_api, namespace, "b", clock_b)
    ghost = candidate(kube_api, namespace, "ghost", [0.0])
    assert await ghost.try_acquire_or_renew()
    # Both see the ghost's lease, then it never changes again.
    assert not await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock_a[0] = clock_b[0] = TIMINGS.lease_duration + 1
    # Both read the same resourceVersion and write: one gets a 409.
    won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(won) == [False, True]
    holder = lease(kube, namespace)["spec"]["holderIdentity"]
    assert holder == ("a" if won[0] else "b")
