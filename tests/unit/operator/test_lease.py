"""Leader election's pure decisions (kubeinfer.operator.lease), case by case."""

from datetime import UTC, datetime, timedelta

import pytest
from kubeinfer.operator.lease import (
    Action,
    InvalidTimingsError,
    LeaseRecord,
    LeaseTimings,
    Observation,
    claimed,
    next_action,
    observe,
    released,
    still_leading,
)

T = LeaseTimings()  # 8 s lease, 6 s renew deadline, 1 s retry
ME, OTHER = "operator-a_1234", "operator-b_5678"
WALL = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def held(holder: str | None, *, renewed: datetime = WALL, duration: int | None = 8) -> LeaseRecord:
    return LeaseRecord(holder, duration, WALL - timedelta(minutes=5), renewed, transitions=3)


# (case, observation (None: no Lease), now on the candidate's monotonic clock, expected)
ACTIONS = [
    ("no lease yet: create it", None, 100.0, Action.CREATE),
    ("ours: renew", Observation(held(ME), seen_at=99.0), 100.0, Action.RENEW),
    ("ours, even long unrenewed: renew", Observation(held(ME), seen_at=10.0), 100.0, Action.RENEW),
    ("released (no holder): acquire", Observation(held(None), seen_at=99.9), 100.0, Action.ACQUIRE),
    ("released (empty string): acquire", Observation(held(""), 99.9), 100.0, Action.ACQUIRE),
    ("other's, seen just now: wait", Observation(held(OTHER), seen_at=100.0), 100.0, Action.WAIT),
    ("other's, unchanged 7.9 s: wait", Observation(held(OTHER), seen_at=92.1), 100.0, Action.WAIT),
    ("other's, unchanged 8 s: expired", Observation(held(OTHER), 92.0), 100.0, Action.ACQUIRE),
    ("other's, unchanged 60 s: expired", Observation(held(OTHER), 40.0), 100.0, Action.ACQUIRE),
    # Clock skew: the holder's renewTime is never compared with our clock.
    (
        "renewTime an hour in the past, but the record just changed: wait",
        Observation(held(OTHER, renewed=WALL - timedelta(hours=1)), seen_at=99.0),
        100.0,
        Action.WAIT,
    ),
    (
        "renewTime an hour in the future, but unchanged for 9 s: expired",
        Observation(held(OTHER, renewed=WALL + timedelta(hours=1)), seen_at=91.0),
        100.0,
        Action.ACQUIRE,
    ),
    # The holder's leaseDurationSeconds says how long others wait.
    (
        "holder asks for 30 s, unchanged 20 s: wait",
        Observation(held(OTHER, duration=30), seen_at=80.0),
        100.0,
        Action.WAIT,
    ),
    (
        "holder asks for 30 s, unchanged 31 s: expired",
        Observation(held(OTHER, duration=30), seen_at=69.0),
        100.0,
        Action.ACQUIRE,
    ),
    (
        "holder says nothing: our 8 s apply",
        Observation(held(OTHER, duration=None), seen_at=91.0),
        100.0,
        Action.ACQUIRE,
    ),
]


@pytest.mark.parametrize(
    ("observed", "now", "expected"), [a[1:] for a in ACTIONS], ids=[a[0] for a in ACTIONS]
)
def test_next_action(observed: Observation | None, now: float, expected: Action) -> None:
    assert next_action(observed, ME, now, T) is expected


class TestObserve:
    def test_an_unchanged_record_keeps_when_it_was_first_seen(self) -> None:
        first = observe(None, held(OTHER), 10.0)
        again = observe(first, held(OTHER), 15.0)
        assert again.seen_at == 10.0

    def test_a_renewal_counts_from_when_it_is_seen(self) -> None:
        first = observe(None, held(OTHER), 10.0)
        renewed = observe(first, held(OTHER, renewed=WALL + timedelta(seconds=1)), 15.0)
        assert renewed.seen_at == 15.0

    def test_a_dead_holder_expires_one_lease_after_its_last_renewal_was_seen(self) -> None:
        # Polling every second: the standby sees the last renewal at 10 and
        # the same record at every poll after; it takes over at 18.
        observed: Observation | None = None
        actions = {}
        for now in range(10, 20):
            observed = observe(observed, held(OTHER), float(now))
            actions[now] = next_action(observed, ME, float(now), T)
        assert [n for n, a in actions.items() if a is Action.ACQUIRE] == [18, 19]


class TestClaimed:
    def test_renewal_keeps_the_acquire_time_and_the_transitions(self) -> None:
        mine = held(ME)
        later = WALL + timedelta(seconds=1)
        renewed = claimed(mine, ME, later, T)
        assert renewed.acquire_time == mine.acquire_time
        assert renewed.renew_time == later
        assert renewed.transitions == mine.transitions
        assert renewed.holder == ME

    @pytest.mark.parametrize("previous", [OTHER, None], ids=["from another", "after a release"])
    def test_taking_over_counts_a_transition(self, previous: str | None) -> None:
        taken = claimed(held(previous), ME, WALL, T)
        assert taken == LeaseRecord(ME, 8, WALL, WALL, transitions=4)

    def test_creating_starts_at_zero_transitions(self) -> None:
        assert claimed(None, ME, WALL, T) == LeaseRecord(ME, 8, WALL, WALL, 0)


def test_release_frees_the_lease_for_an_immediate_takeover() -> None:
    freed = released(held(ME), WALL)
    assert (freed.holder, freed.duration_seconds, freed.transitions) == (None, 1, 3)
    # A standby that saw it a moment ago takes it at its next poll.
    assert next_action(Observation(freed, seen_at=100.0), OTHER, 100.1, T) is Action.ACQUIRE


# (case, monotonic time the last successful renewal began, now, may still act)
FENCE = [
    ("never renewed", None, 100.0, False),
    ("renewed 1 s ago", 99.0, 100.0, True),
    ("renewed 5.9 s ago", 94.1, 100.0, True),
    ("renew deadline reached", 94.0, 100.0, False),
    ("paused for a minute (SIGSTOP)", 40.0, 100.0, False),
]


@pytest.mark.parametrize(
    ("last", "now", "expected"), [f[1:] for f in FENCE], ids=[f[0] for f in FENCE]
)
def test_still_leading(last: float | None, now: float, expected: bool) -> None:
    assert still_leading(last, now, T) is expected


def test_a_leader_stops_before_any_standby_may_take_over() -> None:
    # The renewal began at 100 and the standby saw it no earlier; the leader
    # stops acting at 106, the standby may take over from 108 on.
    stops = min(t / 10 for t in range(1000, 1200) if not still_leading(100.0, t / 10, T))
    takes_over = min(
        t / 10
        for t in range(1000, 1200)
        if next_action(Observation(held(OTHER), 100.0), ME, t / 10, T) is Action.ACQUIRE
    )
    assert stops < takes_over
    assert takes_over - stops == pytest.approx(T.lease_duration - T.renew_deadline)


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "message"),
    [
        (8, 8, 1, "lease duration (8 s) must exceed the renew deadline (8 s)"),
        (8, 6, 5, "renew deadline (6 s) must exceed 1.2 x retry period (5 s)"),
        (8, 6, 0, "retry period must be > 0"),
        (8.5, 6, 1, "lease duration must be whole seconds"),
    ],
)
def test_timings_that_cannot_keep_one_leader_are_refused(
    lease: float, renew: float, retry: float, message: str
) -> None:
    with pytest.raises(InvalidTimingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LeaseTimings(lease, renew, retry)


def test_default_timings_take_over_well_within_15_s() -> None:
    assert T.worst_takeover_seconds() == pytest.approx(10.4)
