"""What the benchmark sees, with the time it saw it: every worker pod and
InferenceService of one namespace, from watch events.

Times are time.monotonic() at the moment an event arrived here. The
operator learns of the same changes through its own watches on the same
API server, so "seen here" is a fair stand-in for "seen by the operator".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubeinfer.operator.api import constants as c

FAILURES_ANNOTATION = f"{c.GROUP}/failures"


@dataclass
class PodRecord:
    name: str
    uid: str
    service: str
    seen_at: float  # the ADDED event arrived
    phase: str = "Pending"
    node: str | None = None
    ready: bool = False
    ready_at: float | None = None  # Ready=True first seen
    failed_at: float | None = None  # first event that shows a failure
    gone_at: float | None = None  # DELETED, or deletionTimestamp set
    failures: int = 0


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(x.get("type") == "Ready" and x.get("status") == "True" for x in conditions)


def _failed(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return True
    return any(
        (cs.get("state") or {}).get("terminated") for cs in status.get("containerStatuses") or []
    )


class Observer:
    """Pods and InferenceServices of one namespace, as events arrive."""

    def __init__(self) -> None:
        self.pods: dict[str, PodRecord] = {}
        self.service_ready_at: dict[str, float] = {}
        self.service_ready: dict[str, bool] = {}
        # Pods the operator lists as ready in status.replicaStatuses.
        self.status_ready_pods: dict[str, set[str]] = {}
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(c.LABEL_COMPONENT) != c.COMPONENT_WORKER:
            return
        uid = meta["uid"]
        record = self.pods.get(uid)
        if record is None:
            record = PodRecord(
                name=meta["name"],
                uid=uid,
                service=labels.get(c.LABEL_SERVICE, ""),
                seen_at=now,
                failures=int((meta.get("annotations") or {}).get(FAILURES_ANNOTATION, "0")),
            )
            self.pods[uid] = record
        record.phase = (pod.get("status") or {}).get("phase") or "Pending"
        record.node = (pod.get("spec") or {}).get("nodeName")
        record.ready = _ready(pod)
        if record.ready and record.ready_at is None:
            record.ready_at = now
        if record.failed_at is None and _failed(pod):
            record.failed_at = now
        gone = kind == "DELETED" or meta.get("deletionTimestamp") is not None
        if gone and record.gone_at is None:
            record.gone_at = now
        self._notify()

    def on_service(self, kind: str, isvc: dict[str, Any]) -> None:
        now = time.monotonic()
        name = isvc["metadata"]["name"]
        status = isvc.get("status") or {}
        conditions = status.get("conditions") or []
        self.status_ready_pods[name] = {
            row.get("pod", "") for row in status.get("replicaStatuses") or [] if row.get("ready")
        }
        ready = kind != "DELETED" and any(
            x.get("type") == "Ready" and x.get("status") == "True" for x in conditions
        )
        if ready and not self.service_ready.get(name):
            self.service_ready_at.setdefault(name, now)
        self.service_ready[name] = ready
        if kind == "DELETED":
            self.service_ready.pop(name, None)
        self._notify()

    def caught_up(self, service: str, replicas: int) -> bool:
        """The operator's status shows exactly the ready pods seen here."""
        ready = {p.name for p in self.live(service) if p.ready and p.failed_at is None}
        return len(ready) >= replicas and self.status_ready_pods.get(service) == ready

    def live(self, service: str | None = None) -> list[PodRecord]:
        """Worker pods that exist and are not being deleted."""
        return [
            p
            for p in self.pods.values()
            if p.gone_at is None and (service is None or p.service == service)
        ]

    async def wait(self, predicate: Callable[[], Any], limit_s: float, what: str) -> Any:
        """Wait until predicate() is truthy (re-checked on every event); its value.

        Raises TimeoutError naming what was awaited.
        """
        deadline = time.monotonic() + limit_s
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {limit_s:.0f}s waiting for {what}")
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(left, 1.0))
            except TimeoutError:
                continue
