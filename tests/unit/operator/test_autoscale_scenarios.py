"""The planner under an autoscaler: replicas change while a canary runs.

The real ``plan_reconcile`` decides every step (see sim_world); the test
plays the autoscaler by changing ``spec.replicas`` as ``decide`` would.
"""

import math

from kubeinfer.operator.api.status import RolloutPhase
from sim_world import SimWorld, base_spec

P = RolloutPhase


def phase(world: SimWorld) -> RolloutPhase:
    return RolloutPhase(world.status["rollout"]["phase"])


def live(world: SimWorld, revision: str) -> int:
    return sum(1 for p in world.pods_of(revision) if p.draining_since is None)


def test_scale_up_mid_canary_keeps_the_share_in_whole_gpus_within_the_budget() -> None:
    spec = base_spec(replicas=2, autoscaling={"maxReplicas": 6})
    world = SimWorld(spec)
    world.settle()
    stable = world.revision
    # a new revision: the canary starts at 25 % of 2 GPUs = 1 pod
    world.spec = {**world.spec, "model": {**world.spec["model"], "source": "org/m-7b-v2"}}
    canary = world.revision
    for _ in range(3):
        world.reconcile()
        world.make_ready()
    assert phase(world) is P.ANALYSING
    assert live(world, canary) == 1
    # the autoscaler adds 4 GPUs while the step is being analysed
    world.spec = {**world.spec, "replicas": 6}
    budget = 6 + 1  # maxReplicas + maxSurge
    world.max_pods_seen = 0
    steps_seen: set[int] = set()
    for _ in range(60):
        world.reconcile()
        world.make_ready()
        for rev in (stable, canary):
            world.serve(rev, 20)
        world.tick(3)
        assert len(world.pods) <= budget  # draining pods count: they hold a GPU
        if phase(world) is P.ANALYSING:
            step = world.status["rollout"]["step"]
            weight = world.spec["rollout"]["steps"][step]
            steps_seen.add(step)
            # the canary's share of the 6 GPUs, in whole GPUs
            assert live(world, canary) == math.ceil(6 * weight / 100)
            assert live(world, canary) + live(world, stable) <= budget
        if phase(world) is P.IDLE and world.status["stableRevision"] == canary:
            break
    assert world.status["stableRevision"] == canary
    assert steps_seen >= {1, 2}
    world.settle()
    assert live(world, canary) == 6
    assert live(world, stable) == 0
    non_draining = [p for p in world.pods.values() if p.draining_since is None]
    assert len(non_draining) == 6
