"""Failed-pod replacement, backoff, scaling and GPU shortage, through the planner."""

import dataclasses

import pytest
from kubeinfer.operator.observe import NodeInfo, PodInfo
from kubeinfer.operator.replacement import backoff_seconds, classify_failure, failures_after
from sim_world import SimWorld, base_spec

NODES = {"n1": NodeInfo("n1", True, "H100", 81559), "n2": NodeInfo("n2", False, "H100", 81559)}


def pod(**changes: object) -> PodInfo:
    base = PodInfo(
        name="p",
        namespace="ns",
        service="s",
        component="worker",
        revision="r",
        replica=0,
        phase="Running",
        ip="127.1.0.2",
        node="n1",
        ready=True,
        deleting=False,
        restarts=0,
        created_at=0.0,
        ready_since=0.0,
        unschedulable_message=None,
        termination_message=None,
        exit_code=None,
        failures=0,
        draining_since=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        (
            {"phase": "Failed", "termination_message": "model not found: x"},
            "pod failed: model not found: x",
        ),
        ({"phase": "Failed", "exit_code": 137}, "pod failed: exit code 137"),
        (
            {"termination_message": "GPU lost: Xid 79", "exit_code": 4, "restarts": 1},
            "GPU lost: Xid 79",
        ),
        # Every GPU fault the worker names moves the pod: read from the exit code.
        (
            {"termination_message": "GPU stuck: 0% for 60 s", "exit_code": 4, "restarts": 1},
            "GPU stuck: 0% for 60 s",
        ),
        ({"exit_code": 4, "restarts": 1}, "GPU fault (exit code 4)"),
        # The text alone is not a verdict: an engine crash that mentions the
        # GPU restarts in place, like any other.
        ({"termination_message": "GPU lost: Xid 79", "exit_code": 5, "restarts": 1}, None),
        ({"node": "n2"}, "node n2 is NotReady"),
        ({"node": "gone"}, "node gone is gone"),
        (
            {
                "restarts": 3,
                "ready": False,
                "termination_message": "CUDA out of memory while loading",
            },
            "crash loop (3 restarts): CUDA out of memory while loading",
        ),
        ({"restarts": 5, "ready": True}, None),  # restarted, but serving now
        ({"node": None, "phase": "Pending", "ready": False}, None),  # not scheduled yet
    ],
)
def test_classify_failure(changes: dict[str, object], reason: str | None) -> None:
    assert classify_failure(pod(**changes), NODES) == reason


@pytest.mark.parametrize(("failures", "seconds"), [(0, 0), (1, 10), (2, 20), (3, 40), (9, 300)])
def test_backoff_grows_and_is_capped(failures: int, seconds: float) -> None:
    assert backoff_seconds(failures) == seconds


def test_failure_count_resets_after_a_long_life() -> None:
    assert failures_after(pod(failures=4, created_at=0.0), now=60.0) == 5
    assert failures_after(pod(failures=4, created_at=0.0), now=7200.0) == 1


def fail(world: SimWorld, name: str, message: str) -> None:
    """The worker left with a GPU fault (exit code 4) and was restarted."""
    world.pods[name] = dataclasses.replace(
        world.pods[name], termination_message=message, exit_code=4, restarts=1, ready=False
    )


def test_gpu_fault_is_replaced_at_once_on_another_node() -> None:
    world = SimWorld(base_spec())
    world.settle()
    victim = sorted(world.pods.values(), key=lambda p: p.name)[0]
    fail(world, victim.name, "GPU lost: Xid 79")
    plan = world.reconcile()
    assert [d.name for d in plan.delete] == [victim.name]
    assert plan.delete[0].immediate
    (new,) = plan.create
    assert (new.replica, new.replaces, new.failures) == (victim.replica, victim.name, 1)
    assert new.avoid_nodes == (victim.node,)
    assert victim.name not in {t.pod for t in plan.targets}
    assert any(e.reason == "ReplacingPod" and "Xid 79" in e.message for e in plan.events)
    degraded = next(c for c in world.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ReplacingFailedPods"


def test_a_replacement_that_fails_again_waits_for_its_backoff() -> None:
    world = SimWorld(base_spec(replicas=1))
    world.settle()
    (first,) = world.pods.values()
    fail(world, first.name, "GPU fault: ECC")
    world.reconcile()
    (second,) = world.pods.values()
    assert second.failures == 1
    fail(world, second.name, "GPU fault: ECC")
    world.tick(5)
    assert world.reconcile().create == []  # lived 5 s, backoff is 10 s
    world.tick(6)
    (third,) = world.reconcile().create
    assert third.failures == 2


def test_node_not_ready_moves_its_pods() -> None:
    world = SimWorld(base_spec())
    world.settle()
    node = next(iter(world.pods.values())).node
    assert node is not None
    world.nodes[node] = dataclasses.replace(world.nodes[node], ready=False)
    plan = world.reconcile()
    moved = [d.name for d in plan.delete]
    assert moved
    assert all(c.avoid_nodes == (node,) for c in plan.create)
    assert all(c.exclude_nodes == (node,) for c in plan.create)
    assert len(plan.create) == len(moved)


def test_scale_down_drains_highest_replicas_then_deletes() -> None:
    world = SimWorld(base_spec(replicas=4))
    world.settle()
    world.spec = {**world.spec, "replicas": 2}
    plan = world.reconcile()
    drained = {world.pods[n].replica for n in plan.drain}
    assert drained == {2, 3}
    assert plan.delete == []
    assert {t.pod for t in plan.targets if t.draining} == set(plan.drain)
    world.in_flight = {name: 1 for name in plan.drain}
    world.tick(3)
    assert world.reconcile().delete == []  # requests still in flight
    world.in_flight = {}
    world.tick(1)
    assert {d.name for d in world.reconcile().delete} == set(plan.drain)
    assert sorted(p.replica for p in world.pods.values()) == [0, 1]


def test_scale_down_removes_not_ready_pods_first() -> None:
    world = SimWorld(base_spec(replicas=3))
    world.reconcile()
    world.make_ready()
    lagging = sorted(world.pods.values(), key=lambda p: p.replica or 0)[0]
    world.pods[lagging.name] = dataclasses.replace(lagging, ready=False)
    world.spec = {**world.spec, "replicas": 2}
    plan = world.reconcile()
    assert [d.name for d in plan.delete] == [lagging.name]
    assert plan.drain == []


@pytest.mark.parametrize(
    ("gpu", "reason", "shortage"),
    [
        ({}, "InsufficientGPU", "Insufficient nvidia.com/gpu"),
        # A CPU worker (gpu.count 0) waits for CPU or memory, never for a GPU.
        ({"count": 0}, "Unschedulable", "Insufficient cpu"),
    ],
)
def test_unschedulable_pods_are_reported_with_counts(
    gpu: dict[str, object], reason: str, shortage: str
) -> None:
    world = SimWorld(base_spec(replicas=2, gpu=gpu))
    world.reconcile()
    for name, p in list(world.pods.items()):
        world.pods[name] = dataclasses.replace(
            p, node=None, unschedulable_message=f"0/3 nodes are available: 3 {shortage}."
        )
    world.reconcile()
    degraded = next(c for c in world.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == reason
    assert degraded["message"].startswith("2 of 2 worker pods cannot be scheduled: 0/3 nodes")


def test_planning_twice_on_the_same_state_gives_the_same_actions() -> None:
    world = SimWorld(base_spec())
    isvc = world.isvc
    from kubeinfer.operator.builders.revision import revision_template
    from kubeinfer.operator.plan import Observed, plan_reconcile

    observed = Observed(pods=[], nodes=world.nodes, stats=None, routers_ready=0, now=world.now)
    first = plan_reconcile(
        isvc, revision=world.revision, template=revision_template(isvc.spec), observed=observed
    )
    again = plan_reconcile(
        isvc, revision=world.revision, template=revision_template(isvc.spec), observed=observed
    )
    assert first.create == again.create
    assert first.status == again.status
