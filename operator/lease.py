"""Leader election on a coordination.k8s.io/v1 Lease: the pure decisions.

The semantics are client-go's (k8s.io/client-go/tools/leaderelection), so a
kubeinfer operator behaves like kube-controller-manager next to it:

- A candidate never compares the holder's ``renewTime`` with its own clock
  (the two clocks may disagree by minutes). It notes, on its own monotonic
  clock, when it first saw the current record; the lease has expired when
  the record has not changed for ``leaseDurationSeconds`` since then.
- The holder renews every ``retry_period``. When it has not renewed for
  ``renew_deadline`` it must stop acting at once: ``renew_deadline`` is
  shorter than the lease, so the old leader has stopped before any standby
  may take over (fencing by time; Kubernetes has no fencing tokens).
- A holder that stops gracefully releases the lease (empty holder, duration
  1 s), so a standby takes over at its next poll instead of after a lease.

Every function here is a plain function of plain data (the I/O is in
kubeinfer.operator.leader), so the table tests in
tests/unit/operator/test_lease.py can state each case.
"""

import enum
from dataclasses import dataclass, replace
from datetime import datetime

# client-go's JitterFactor: a retry waits retry_period * (1 + up to 0.2).
JITTER_FACTOR = 1.2


class InvalidTimingsError(ValueError):
    """Lease timings that cannot keep one leader at a time."""


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds. The defaults replace a SIGKILLed leader within about 10 s
    (worst case lease + 2 polls = 8 + 2 x 1.2), leaving room for kopf's
    start inside the 15 s target; a leader stops 2 s before its lease ends.
    """

    lease_duration: float = 8.0
    renew_deadline: float = 6.0
    retry_period: float = 1.0

    def __post_init__(self) -> None:
        if self.retry_period <= 0:
            raise InvalidTimingsError(f"retry period must be > 0, got {self.retry_period}")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise InvalidTimingsError(
                f"renew deadline ({self.renew_deadline} s) must exceed "
                f"{JITTER_FACTOR} x retry period ({self.retry_period} s)"
            )
        if self.lease_duration <= self.renew_deadline:
            raise InvalidTimingsError(
                f"lease duration ({self.lease_duration} s) must exceed "
                f"the renew deadline ({self.renew_deadline} s)"
            )
        if self.lease_duration != int(self.lease_duration):
            raise InvalidTimingsError(
                f"lease duration must be whole seconds (leaseDurationSeconds), "
                f"got {self.lease_duration}"
            )

    def worst_takeover_seconds(self) -> float:
        """From a leader's death to a standby holding its lease, at most:
        the standby may see the last renewal one poll late and take over one
        poll after the lease has run out."""
        return self.lease_duration + 2 * JITTER_FACTOR * self.retry_period


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease, as leader election reads and writes it."""

    holder: str | None = None
    duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Observation:
    """A record and when (this candidate's monotonic clock) it was first seen."""

    record: LeaseRecord
    seen_at: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """A record counts as renewed only when it changes: an unchanged record
    keeps the time it was first seen, whatever its renewTime says."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    ACQUIRE = "acquire"  # free, released or expired: take it over
    RENEW = "renew"  # ours: renew it
    WAIT = "wait"  # another candidate holds a live lease


def next_action(
    observed: Observation | None, identity: str, now: float, timings: LeaseTimings
) -> Action:
    """What a candidate does at ``now`` given what it has observed (None:
    the Lease does not exist)."""
    if observed is None:
        return Action.CREATE
    record = observed.record
    if record.holder == identity:
        return Action.RENEW
    if not record.holder:
        return Action.ACQUIRE
    # The holder says how long others must wait (the Lease API's meaning of
    # leaseDurationSeconds); our own setting when it says nothing.
    duration = record.duration_seconds or timings.lease_duration
    if now < observed.seen_at + duration:
        return Action.WAIT
    return Action.ACQUIRE


def claimed(
    current: LeaseRecord | None, identity: str, wall_now: datetime, timings: LeaseTimings
) -> LeaseRecord:
    """The record a candidate writes to hold the lease: a renewal keeps the
    acquire time; a change of holder counts one more transition."""
    duration = int(timings.lease_duration)
    if current is not None and current.holder == identity:
        return replace(current, duration_seconds=duration, renew_time=wall_now)
    transitions = 0 if current is None else current.transitions + 1
    return LeaseRecord(identity, duration, wall_now, wall_now, transitions)


def released(current: LeaseRecord, wall_now: datetime) -> LeaseRecord:
    """client-go's release: no holder and a 1 s lease, so a standby takes
    over at once; the next holder counts the transition."""
    return replace(
        current, holder=None, duration_seconds=1, acquire_time=wall_now, renew_time=wall_now
    )


def still_leading(last_renewed: float | None, now: float, timings: LeaseTimings) -> bool:
    """Whether a holder may still act: it renewed (monotonic ``last_renewed``,
    taken when the successful renewal *began*) less than renew_deadline ago.
    A leader that was paused (SIGSTOP, a frozen VM) fails this on waking,
    before any standby can have taken over."""
    return last_renewed is not None and now - last_renewed < timings.renew_deadline
