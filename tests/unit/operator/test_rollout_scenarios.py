"""Scenario tests: the planner stepped through whole rollouts, one comment per step."""

from typing import Any

from kubeinfer.operator.api.status import ConditionStatus, RolloutPhase
from sim_world import SimWorld, base_spec

P = RolloutPhase


def condition(world: SimWorld, kind: str) -> dict[str, Any]:
    return next(c for c in world.status["conditions"] if c["type"] == kind)


def phase(world: SimWorld) -> RolloutPhase:
    return RolloutPhase(world.status["rollout"]["phase"])


def new_model(world: SimWorld, source: str = "org/m-7b-v2") -> str:
    old = world.revision
    world.spec = {**world.spec, "model": {**world.spec["model"], "source": source}}
    assert world.revision != old
    return world.revision


def test_first_reconcile_creates_every_replica_of_the_stable_revision() -> None:
    world = SimWorld(base_spec())
    plan = world.reconcile()
    assert sorted(c.replica for c in plan.create) == [0, 1, 2, 3]
    assert world.status["stableRevision"] == world.revision
    assert [e.reason for e in plan.events] == ["Created"]
    assert condition(world, "Ready")["status"] == "False"
    world.make_ready()
    world.reconcile()
    assert condition(world, "Ready")["status"] == ConditionStatus.TRUE
    assert world.status["readyText"] == "4/4"
    assert world.status["phase"] == "Ready"


def test_good_canary_walks_every_step_and_is_promoted_within_budget() -> None:
    world = SimWorld(base_spec())
    world.settle()
    stable = world.revision
    canary = new_model(world)
    # The new revision starts a rollout at step 1 (25 %): one canary pod (surge).
    world.reconcile()
    assert phase(world) is P.PROGRESSING
    assert len(world.pods_of(canary)) == 1
    assert len(world.pods_of(stable)) == 4
    # Canary ready: analysing at 25 % of traffic.
    world.make_ready()
    world.reconcile()
    assert phase(world) is P.ANALYSING
    assert world.status["canaryWeight"] == 25
    # Enough requests, interval over, no errors: step passes, on to 50 %.
    world.serve(canary, 30)
    world.serve(stable, 90)
    world.tick(11)
    world.reconcile()
    assert phase(world) is P.PROGRESSING
    assert world.status["rollout"]["step"] == 1
    # Keep going until it settles: 50 %, 100 %, promotion, old pods drained.
    for _ in range(40):
        world.reconcile()
        world.make_ready()
        world.serve(canary, 30)
        world.tick(11)
        if phase(world) is P.IDLE:
            break
    assert phase(world) is P.IDLE
    assert world.status["stableRevision"] == canary
    assert world.status.get("canaryRevision") is None
    assert len(world.pods_of(canary)) == 4
    assert world.pods_of(stable) == []
    # The GPU budget (replicas + maxSurge) held the whole time.
    assert world.max_pods_seen <= 5
    assert [r["outcome"] for r in world.status["revisionHistory"]] == ["Initial", "Promoted"]
    reasons = [e.reason for p in world.plans for e in p.events]
    assert reasons.count("StepReady") == 3
    assert "CanaryPassed" in reasons
    assert "Promoted" in reasons


def test_bad_canary_is_rolled_back_and_not_retried() -> None:
    world = SimWorld(base_spec())
    world.settle()
    stable = world.revision
    canary = new_model(world, "org/broken-7b")
    world.reconcile()
    world.make_ready()
    world.reconcile()
    assert phase(world) is P.ANALYSING
    # Half the canary's requests fail: rolled back at once, without waiting
    # for the step interval.
    world.serve(canary, 20, errors=10)
    world.reconcile()
    assert phase(world) is P.ROLLING_BACK
    assert world.status["canaryWeight"] == 0
    world.settle(serve=False)
    assert phase(world) is P.FAILED
    assert world.pods_of(canary) == []
    assert len(world.pods_of(stable)) == 4
    rolled_back = condition(world, "RolledBack")
    assert rolled_back["status"] == "True"
    assert "canary error rate 50.0% > 5.0% (10/20 requests)" in rolled_back["message"]
    # Reconciling again does not restart the failed revision.
    world.reconcile()
    assert world.pods_of(canary) == []
    assert phase(world) is P.FAILED


def test_slow_canary_fails_on_latency() -> None:
    world = SimWorld(base_spec())
    world.settle()
    stable = world.revision
    canary = new_model(world)
    world.reconcile()
    world.make_ready()
    world.reconcile()
    world.serve(stable, 100, p99=100.0)
    world.serve(canary, 30, p99=400.0)
    world.tick(11)
    world.reconcile()
    assert phase(world) is P.ROLLING_BACK
    message = world.status["rollout"]["lastAnalysis"]["message"]
    assert message.startswith("canary p99 latency 400 ms is 4.0x stable's 100 ms (max 1.5x)")


def test_max_surge_zero_replaces_in_place_one_at_a_time() -> None:
    spec = base_spec(replicas=4)
    spec["rollout"] = {**spec["rollout"], "maxSurge": 0}
    world = SimWorld(spec)
    world.settle()
    canary = new_model(world)
    lowest_serving = 4
    for _ in range(60):
        world.reconcile()
        serving = sum(1 for p in world.pods.values() if p.ready and p.draining_since is None)
        lowest_serving = min(lowest_serving, serving)
        world.make_ready()
        world.serve(canary, 30)
        world.tick(11)
        if phase(world) is P.IDLE:
            break
    assert world.status["stableRevision"] == canary
    assert world.max_pods_seen <= 4
    assert lowest_serving >= 3


def test_spec_reverted_mid_rollout_removes_the_canary() -> None:
    world = SimWorld(base_spec())
    world.settle()
    original = dict(world.spec)
    canary = new_model(world)
    world.reconcile()
    world.make_ready()
    world.reconcile()
    world.spec = original
    world.reconcile()
    assert phase(world) is P.IDLE
    world.settle()
    assert world.pods_of(canary) == []


def test_pause_holds_and_resume_continues() -> None:
    world = SimWorld(base_spec())
    world.settle()
    canary = new_model(world)
    world.reconcile()
    world.make_ready()
    world.annotations["kubeinfer.io/rollout"] = "pause"
    world.reconcile()
    assert phase(world) is P.PAUSED
    world.serve(canary, 100)
    world.tick(100)
    world.reconcile()
    assert phase(world) is P.PAUSED
    world.annotations["kubeinfer.io/rollout"] = "resume"
    world.reconcile()
    assert phase(world) is P.PROGRESSING


def test_manual_promote_and_abort_are_consumed() -> None:
    world = SimWorld(base_spec())
    world.settle()
    canary = new_model(world)
    world.reconcile()
    world.annotations["kubeinfer.io/rollout"] = "promote"
    world.reconcile()
    assert phase(world) is P.PROMOTING
    assert "kubeinfer.io/rollout" not in world.annotations
    world.settle()
    assert world.status["stableRevision"] == canary
    second = new_model(world, "org/m-7b-v3")
    world.reconcile()
    world.annotations["kubeinfer.io/rollout"] = "abort"
    world.reconcile()
    assert phase(world) is P.ROLLING_BACK
    world.settle()
    assert phase(world) is P.FAILED
    assert world.pods_of(second) == []


def test_canary_weight_follows_ready_capacity() -> None:
    spec = base_spec(replicas=8)
    spec["rollout"] = {**spec["rollout"], "steps": [50, 100], "maxSurge": 4}
    world = SimWorld(spec)
    world.settle()
    canary = new_model(world)
    world.reconcile()
    assert len(world.pods_of(canary)) == 4
    first = world.pods_of(canary)[0]
    world.pods[first.name] = first.__class__(**{**first.__dict__, "ready": True})
    world.reconcile()
    assert world.status["canaryWeight"] == 12  # 50 % x 1/4 of the canary pods ready


def test_bad_canary_with_auto_rollback_off_pauses_and_waits_for_a_person() -> None:
    world = SimWorld({**base_spec(), "rollout": {"autoRollback": False}})
    world.settle()
    stable = world.revision
    canary = new_model(world, "org/broken-7b")
    world.reconcile()
    world.make_ready()
    world.reconcile()
    world.serve(canary, 20, errors=10)
    world.reconcile()
    # Held, not rolled back: the canary keeps its pods, nothing is marked failed.
    assert phase(world) is P.PAUSED
    assert world.status["rollout"]["message"].endswith("; paused (autoRollback is off)")
    assert world.status["rollout"].get("failedRevision") is None
    assert world.status["rollout"]["lastAnalysis"]["passed"] is False
    assert world.pods_of(canary) != []
    # Held until a person acts: time passing or a missing annotation does not resume it.
    world.tick(100)
    world.reconcile()
    assert phase(world) is P.PAUSED
    # `resume` re-analyses the step (and is consumed); it fails again.
    world.annotations["kubeinfer.io/rollout"] = "resume"
    world.reconcile()
    assert "kubeinfer.io/rollout" not in world.annotations
    assert phase(world) is P.PROGRESSING
    world.reconcile()
    world.serve(canary, 20, errors=10)
    world.reconcile()
    assert phase(world) is P.PAUSED
    # A person decides: abort rolls back and marks the revision failed.
    world.annotations["kubeinfer.io/rollout"] = "abort"
    world.reconcile()
    assert phase(world) is P.ROLLING_BACK
    world.settle(serve=False)
    assert phase(world) is P.FAILED
    assert world.status["rollout"]["failedRevision"] == canary
    assert len(world.pods_of(stable)) == 4


def test_commands_apply_only_where_the_table_has_them() -> None:
    world = SimWorld(base_spec())
    world.settle()
    # Idle: no rollout to pause, promote or abort; the annotation waits.
    for command in ("pause", "promote", "abort"):
        world.annotations["kubeinfer.io/rollout"] = command
        world.reconcile()
        assert phase(world) is P.IDLE, command


def test_each_transition_has_its_own_key_and_a_repeat_from_a_stale_status_the_same() -> None:
    world = SimWorld(base_spec())
    world.settle()
    canary = new_model(world, "org/broken-7b")
    world.reconcile()
    world.make_ready()
    world.reconcile()
    world.serve(canary, 20, errors=10)
    # The leader decides the rollback; killed before its status write, its
    # successor plans from the status before it: the same transition, and
    # the same key (the Event's name, kubeinfer.operator.events).
    before = dict(world.status)
    decided = world.reconcile()
    world.status = before
    repeated = world.reconcile()
    keyed = [(e.reason, e.key) for e in decided.events if e.key is not None]
    assert keyed == [("StepFailed", "2-StepFailed")]
    assert [(e.reason, e.key) for e in repeated.events if e.key is not None] == keyed
    world.settle(serve=False)
    assert phase(world) is P.FAILED
    keys = [e.key for p in world.plans for e in p.events if e.key is not None]
    # Created, then one key per transition, numbered in order; the repeat
    # is the one duplicate.
    assert keys == [
        "Created",
        "0-NewRevision",
        "1-StepReady",
        "2-StepFailed",
        "2-StepFailed",
        "3-RolledBack",
    ]
    assert world.status["rollout"]["transitions"] == 4
