"""Leader election for the operator: the Lease I/O around kubeinfer.operator.lease.

Why not kubernetes_asyncio.leaderelection: it judges expiry by wall-clock
timestamps in local (naive) time, never releases the lease on a graceful
stop (a standby then waits a whole lease), logs every lost race as an
exception, and has no way to fence writes of a leader that was paused.
This module keeps client-go's semantics with the pure decisions in
lease.py and does three things more:

- ``fence()``: the operator's Kubernetes client calls it before every write;
  a leader whose last renewal is older than the renew deadline (it was
  paused, or the API server did not answer) exits there, before the write.
- ``release()`` on a graceful stop, after kopf has stopped writing.
- one log line and one Kubernetes Event (on the Lease) per hand-over.
"""

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp
from kubeinfer.operator.events import event_body
from kubeinfer.operator.kube import ApiError, ConflictError, KubeClient, NotFoundError
from kubeinfer.operator.lease import (
    JITTER_FACTOR,
    Action,
    LeaseRecord,
    LeaseTimings,
    Observation,
    claimed,
    next_action,
    observe,
    released,
    still_leading,
)
from kubeinfer.operator.metrics import LEADER
from kubeinfer.operator.plan import Event

logger = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
DEFAULT_LEASE_NAME = "kubeinfer-operator"
# The exit status of a leader that lost its lease: the kubelet restarts the
# container, which then stands by (as client-go controllers do).
EXIT_LEADERSHIP_LOST = 75
_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def default_identity(pod_name: str | None) -> str:
    """The pod's name (or the host's) and a random suffix: a restarted
    container must not mistake its predecessor's lease for its own."""
    return f"{pod_name or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def format_micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_MICRO)


def parse_micro_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def record_from_spec(spec: dict[str, Any] | None) -> LeaseRecord:
    spec = spec or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        duration_seconds=spec.get("leaseDurationSeconds"),
        acquire_time=parse_micro_time(spec.get("acquireTime")),
        renew_time=parse_micro_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def spec_from_record(record: LeaseRecord) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "holderIdentity": record.holder or "",
        "leaseTransitions": record.transitions,
    }
    if record.duration_seconds is not None:
        spec["leaseDurationSeconds"] = record.duration_seconds
    if record.acquire_time is not None:
        spec["acquireTime"] = format_micro_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = format_micro_time(record.renew_time)
    return spec


class LeaderElector:
    """One candidate for one Lease. ``acquire()`` returns once it leads;
    ``hold()`` renews and returns when leadership is lost."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings,
        on_lost: Callable[[str], NoReturn],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings
        self.on_lost = on_lost
        self.clock = clock
        self.observed: Observation | None = None
        self.last_renewed: float | None = None
        self.leading = False
        self.reachable = False  # answered at least once: the standby is ready
        self.last_holder: str | None = None
        LEADER.set(0)

    @property
    def path(self) -> str:
        return f"{LEASES.format(namespace=self.namespace)}/{self.name}"

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the lease after it."""
        started = self.clock()
        try:
            async with asyncio.timeout(self.timings.renew_deadline / 2):
                return await self._attempt(started)
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.warning("lease %s/%s: %s", self.namespace, self.name, error)
            return False

    async def _attempt(self, started: float) -> bool:
        try:
            lease: dict[str, Any] | None = await self.kube.request("GET", self.path)
        except NotFoundError:
            lease = None
        self.reachable = True
        current = record_from_spec(lease.get("spec")) if lease else None
        if current is not None:
            self.observed = observe(self.observed, current, started)
            self._note_holder(current.holder)
        action = next_action(self.observed if lease else None, self.identity, started, self.timings)
        if action is Action.WAIT:
            return False
        wanted = claimed(current, self.identity, datetime.now(UTC), self.timings)
        metadata: dict[str, str] = {"name": self.name, "namespace": self.namespace}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec_from_record(wanted),
        }
        try:
            if lease is None:
                await self.kube.request("POST", LEASES.format(namespace=self.namespace), body=body)
            else:
                # Optimistic concurrency: the write fails (409) if anyone
                # wrote the Lease since our read.
                metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
                await self.kube.request("PUT", self.path, body=body)
        except ConflictError:
            return False
        self.observed = Observation(wanted, started)
        self.last_renewed = started
        if action is not Action.RENEW:
            await self._became_leader(current)
        return True

    def _note_holder(self, holder: str | None) -> None:
        if holder != self.last_holder and holder != self.identity:
            logger.info("lease %s/%s: leader is now %s", self.namespace, self.name, holder or "-")
        self.last_holder = holder

    async def _became_leader(self, previous: LeaseRecord | None) -> None:
        self.leading = True
        self.last_holder = self.identity
        LEADER.set(1)
        before = previous.holder if previous else None
        message = f"{self.identity} became leader" + (f" (after {before})" if before else "")
        logger.info("lease %s/%s: %s", self.namespace, self.name, message)
        await self._post_event("LeaderElection", message)

    async def _post_event(self, reason: str, message: str) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": self.name,
            "namespace": self.namespace,
        }
        event = event_body(
            lease, Event("Normal", reason, message), instance=self.identity, now=datetime.now(UTC)
        )
        try:
            await self.kube.request(
                "POST", f"/api/v1/namespaces/{self.namespace}/events", body=event
            )
        except (ApiError, ConflictError, aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.warning("could not post the %s event: %s", reason, error)

    def _retry_delay(self) -> float:
        return self.timings.retry_period * (1 + random.uniform(0, JITTER_FACTOR - 1))

    async def acquire(self) -> None:
        """Stand by until this candidate holds the lease."""
        logger.info("lease %s/%s: standing by as %s", self.namespace, self.name, self.identity)
        while True:
            if await self.try_acquire_or_renew():
                return
            await asyncio.sleep(self._retry_delay())

    async def hold(self) -> str:
        """Renew every retry period; returns why leadership was lost."""
        while True:
            await asyncio.sleep(self.timings.retry_period)
            while True:
                if not still_leading(self.last_renewed, self.clock(), self.timings):
                    return self._lost_reason()
                if await self.try_acquire_or_renew():
                    break
                if self.observed is not None and self.observed.record.holder not in (
                    None,
                    self.identity,
                ):
                    return f"the lease is held by {self.observed.record.holder}"
                await asyncio.sleep(self.timings.retry_period)

    def _lost_reason(self) -> str:
        assert self.last_renewed is not None
        age = self.clock() - self.last_renewed
        return f"not renewed for {age:.1f} s (renew deadline {self.timings.renew_deadline:g} s)"

    def fence(self) -> None:
        """Before a write: a leader past its renew deadline stops here."""
        if not still_leading(self.last_renewed, self.clock(), self.timings):
            self.leading = False
            LEADER.set(0)
            self.on_lost(self._lost_reason() if self.last_renewed else "never led")

    async def release(self) -> None:
        """Give the lease up (graceful stop) so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        LEADER.set(0)
        try:
            async with asyncio.timeout(self.timings.renew_deadline / 2):
                lease = await self.kube.request("GET", self.path)
                current = record_from_spec(lease.get("spec"))
                if current.holder != self.identity:
                    return
                lease["spec"] = spec_from_record(released(current, datetime.now(UTC)))
                await self.kube.request("PUT", self.path, body=lease)
            logger.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
        except (
            ApiError, ConflictError, NotFoundError, aiohttp.ClientError, TimeoutError, OSError
        ) as error:  # fmt: skip
            # The lease then expires on its own: a standby waits one lease.
            logger.warning("lease %s/%s: could not release: %s", self.namespace, self.name, error)
