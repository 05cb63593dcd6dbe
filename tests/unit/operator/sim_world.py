"""A tiny stand-in for the cluster, for scenario tests of the planner.

It is not a mock of our code: it plays the part of Kubernetes and the
routers (pods appear when created, become ready when told, vanish when
deleted; the routers count requests), and every decision is made by the
real ``plan_reconcile``.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kubeinfer.operator.analysis import GpuFacts, RevisionCounters, RouterStats
from kubeinfer.operator.api import InferenceService, ObjectMeta, parse_spec
from kubeinfer.operator.builders.revision import compute_revision, revision_template
from kubeinfer.operator.observe import NodeInfo, PodInfo
from kubeinfer.operator.plan import Observed, Plan, plan_reconcile

IMAGE = "ghcr.io/kubeinfer/worker:test"


def base_spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"name": "m", "source": "org/m-7b"},
        "replicas": 4,
        "rollout": {
            "steps": [25, 50, 100],
            "stepIntervalSeconds": 10,
            "maxSurge": 1,
            "analysis": {"minRequests": 10, "maxErrorRate": 0.05},
        },
    }
    raw.update(overrides)
    return raw


@dataclass
class SimWorld:
    spec: dict[str, Any]
    now: float = 1_000_000.0
    pods: dict[str, PodInfo] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(
        default_factory=lambda: {
            f"gpu-{i}": NodeInfo(f"gpu-{i}", True, "NVIDIA-H100-80GB-HBM3", 81559) for i in range(4)
        }
    )
    counters: dict[str, RevisionCounters] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    gpus: dict[str, GpuFacts] = field(default_factory=dict)  # what the routers report
    max_pods_seen: int = 0
    _ip: int = 1

    @property
    def isvc(self) -> InferenceService:
        return InferenceService.model_validate(
            {
                "metadata": ObjectMeta(
                    name="llm", namespace="ns", uid="u", generation=1, annotations=self.annotations
                ).to_dict(),
                "spec": self.spec,
                "status": self.status,
            }
        )

    @property
    def revision(self) -> str:
        return compute_revision(parse_spec(self.spec), IMAGE)

    def reconcile(self) -> Plan:
        isvc = self.isvc
        observed = Observed(
            pods=list(self.pods.values()),
            nodes=self.nodes,
            stats=RouterStats(routers=1, revisions=dict(self.counters), in_flight=self.in_flight),
            routers_ready=1,
            now=self.now,
            gpus=dict(self.gpus),
        )
        plan = plan_reconcile(
            isvc,
            revision=self.revision,
            template=revision_template(isvc.spec),
            observed=observed,
        )
        self.apply(plan)
        self.plans.append(plan)
        self.status = plan.status.to_dict()
        if plan.clear_command:
            self.annotations.pop("kubeinfer.io/rollout", None)
        return plan

    def apply(self, plan: Plan) -> None:
        for gone in plan.delete:
            del self.pods[gone.name]
        for name in plan.drain:
            self.pods[name] = dataclasses.replace(self.pods[name], draining_since=self.now)
        for new in plan.create:
            name = f"llm-{new.revision[:8]}-{new.replica}-{len(self.plans)}-{self._ip}"
            node = sorted(set(self.nodes) - set(new.avoid_nodes))[self._ip % 3]
            self._ip += 1
            self.pods[name] = PodInfo(
                name=name,
                namespace="ns",
                service="llm",
                component="worker",
                revision=new.revision,
                replica=new.replica,
                phase="Pending",
                ip=f"127.1.0.{self._ip}",
                node=node,
                ready=False,
                deleting=False,
                restarts=0,
                created_at=self.now,
                ready_since=None,
                unschedulable_message=None,
                termination_message=None,
                exit_code=None,
                failures=new.failures,
                draining_since=None,
                has_gpu=not parse_spec(self.spec).gpu.cpu_only,
            )
        self.max_pods_seen = max(self.max_pods_seen, len(self.pods))

    def make_ready(self) -> None:
        for name, pod in self.pods.items():
            if not pod.ready and pod.phase == "Pending":
                self.pods[name] = dataclasses.replace(pod, ready=True, phase="Running")

    def serve(self, revision: str, requests: int, errors: int = 0, p99: float = 50.0) -> None:
        old = self.counters.get(revision, RevisionCounters())
        self.counters[revision] = RevisionCounters(
            old.requests + requests, old.errors + errors, p99, p99
        )

    def tick(self, seconds: float) -> None:
        self.now += seconds

    def pods_of(self, revision: str) -> list[PodInfo]:
        return [p for p in self.pods.values() if p.revision == revision]

    def settle(self, rounds: int = 20, serve: bool = True) -> None:
        """Reconcile, make pods ready, let time pass and traffic flow, until quiet."""
        for _ in range(rounds):
            plan = self.reconcile()
            self.make_ready()
            if serve:
                for rev in {p.revision for p in self.pods.values() if p.revision}:
                    self.serve(rev, 20)
            self.tick(3)
            if plan.requeue_seconds is None and not plan.create and not plan.delete:
                return
