"""Where would these worker pods go? A model of the scheduler's decision (pure).

The operator does not pick nodes: it writes the placement rules into each
worker pod (`builders.worker.build_worker_pod`: node selector, node
affinity, topology spread, pod (anti-)affinity, tolerations, the GPU
request) and kube-scheduler places the pod. `kubectl kubeinfer preview`
builds the very same pods with that builder and runs them through this
module, which applies the same rules to the nodes and pods it is given:

- filters, as the scheduler's: node ready and not cordoned, taints
  tolerated, nodeSelector, required node affinity, free GPUs (and CPU,
  memory, pod slots), required pod anti-affinity both ways;
- ranking by what the placement rules prefer: preferred node affinity
  (largest-first, avoid nodes), the service's own pods on the node (pack:
  more, spread: fewer).

kube-scheduler also scores by balanced resource use and breaks ties at
random, so the answer is the set of best nodes ("one of"), not one name.
Pods are placed one after another, each taking its GPU before the next.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from kubeinfer.operator.api import constants as c

HOSTNAME = "kubernetes.io/hostname"
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity(value: str | int | float | None) -> float:
    """A Kubernetes quantity ("500m", "4Gi", "2") as a number; 0 when absent."""
    if value is None:
        return 0.0
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _requests(pod: dict[str, Any]) -> dict[str, float]:
    total: dict[str, float] = {"pods": 1.0}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in asked.items():
            total[name] = total.get(name, 0.0) + quantity(value)
    return total


def _terminated(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


@dataclass
class NodeState:
    """One node with what is already taken on it."""

    name: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    allocatable: dict[str, float]
    ready: bool
    unschedulable: bool
    allocated: dict[str, float] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)

    def free(self, resource: str) -> float:
        return self.allocatable.get(resource, 0.0) - self.allocated.get(resource, 0.0)

    def take(self, pod: dict[str, Any]) -> None:
        for name, amount in _requests(pod).items():
            self.allocated[name] = self.allocated.get(name, 0.0) + amount
        self.pods.append(pod)


def node_states(
    nodes: list[dict[str, Any]], pods: list[dict[str, Any]], leaving: set[tuple[str, str]]
) -> dict[str, NodeState]:
    """Nodes with the requests of the pods bound to them, except the
    terminated ones and those in ``leaving`` ((namespace, name))."""
    states: dict[str, NodeState] = {}
    for node in nodes:
        meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
        ready = any(
            cond.get("type") == "Ready" and cond.get("status") == "True"
            for cond in status.get("conditions") or []
        )
        states[meta["name"]] = NodeState(
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            taints=list(spec.get("taints") or []),
            allocatable={k: quantity(v) for k, v in (status.get("allocatable") or {}).items()},
            ready=ready,
            unschedulable=bool(spec.get("unschedulable")),
        )
    for pod in pods:
        meta = pod["metadata"]
        state = states.get((pod.get("spec") or {}).get("nodeName") or "")
        if state is None or _terminated(pod) or (meta.get("namespace"), meta["name"]) in leaving:
            continue
        state.take(pod)
    return states


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    """One NodeSelectorRequirement against a node's labels."""
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    have = labels.get(key)
    if op == "In":
        return have in values
    if op == "NotIn":
        return have not in values
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if have is None or not have.lstrip("-").isdigit():
        return False
    return int(have) > int(values[0]) if op == "Gt" else int(have) < int(values[0])


def _term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(expression_matches(e, labels) for e in term.get("matchExpressions") or [])


def _selects(term: dict[str, Any], namespace: str, pod: dict[str, Any]) -> bool:
    """A pod (anti-)affinity term (matchLabels only, which is all kubeinfer
    writes) against another pod."""
    meta = pod["metadata"]
    if "namespaceSelector" not in term and meta.get("namespace") != namespace:
        return False
    wanted = (term.get("labelSelector") or {}).get("matchLabels") or {}
    labels = meta.get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _anti_affinity_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    anti = ((pod.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
    return list(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [])


def why_not(pod: dict[str, Any], node: NodeState) -> str | None:
    """Why the scheduler would not bind ``pod`` to ``node``; None if it may."""
    spec = pod.get("spec") or {}
    namespace = pod["metadata"].get("namespace", "")
    if not node.ready:
        return "node not ready"
    if node.unschedulable:
        return "node cordoned"
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(
            taint, spec.get("tolerations") or []
        ):
            return f"taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    if required and not any(_term_matches(t, node.labels) for t in required):
        return "node affinity"
    for name, amount in _requests(pod).items():
        if amount > 0 and node.free(name) < amount:
            have = node.allocatable.get(name, 0.0)
            if name == "pods":
                return "no pod slot free"
            if "/" in name:
                used = node.allocated.get(name, 0.0)
                return f"no free {name} ({used:g}/{have:g} allocated)"
            return f"not enough {name}"
    for term in _anti_affinity_terms(pod):
        if any(_selects(term, namespace, other) for other in node.pods):
            return "another kubeinfer worker is on it (isolation)"
    for other in node.pods:
        other_ns = other["metadata"].get("namespace", "")
        if any(_selects(term, other_ns, pod) for term in _anti_affinity_terms(other)):
            return "an isolated kubeinfer worker is on it"
    return None


def preference(pod: dict[str, Any], node: NodeState) -> int:
    """How much the pod's placement rules like ``node`` (higher is better)."""
    spec = pod.get("spec") or {}
    affinity = spec.get("affinity") or {}
    score = 0
    preferred = (affinity.get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    for term in preferred:
        if _term_matches(term.get("preference") or {}, node.labels):
            score += int(term.get("weight", 0))
    namespace = pod["metadata"].get("namespace", "")
    for weighted in (affinity.get("podAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []:
        term = weighted.get("podAffinityTerm") or {}
        if any(_selects(term, namespace, other) for other in node.pods):
            score += int(weighted.get("weight", 0))
    for spread in spec.get("topologySpreadConstraints") or []:
        term = {"labelSelector": spread.get("labelSelector") or {}}
        # Fewer of the service's pods on a node: more preferred.
        score -= 100 * sum(1 for other in node.pods if _selects(term, namespace, other))
    return score


@dataclass(frozen=True)
class Placement:
    """Where one pod would go."""

    pod: str
    nodes: tuple[str, ...]  # the best nodes (the scheduler picks one of them); empty: none
    rejected: dict[str, str]  # node -> why not

    @property
    def placed(self) -> bool:
        return bool(self.nodes)

    @property
    def node(self) -> str | None:
        return self.nodes[0] if self.nodes else None


def place_pods(pods: list[dict[str, Any]], nodes: dict[str, NodeState]) -> list[Placement]:
    """Place ``pods`` one after another on ``nodes`` (which are updated:
    each placed pod takes its resources on the first of its best nodes)."""
    out = []
    for pod in pods:
        rejected: dict[str, str] = {}
        scores: dict[str, int] = {}
        for node in nodes.values():
            reason = why_not(pod, node)
            if reason is None:
                scores[node.name] = preference(pod, node)
            else:
                rejected[node.name] = reason
        best = max(scores.values(), default=None)
        chosen = tuple(sorted(n for n, s in scores.items() if s == best))
        if chosen:
            bound = {**pod, "spec": {**pod["spec"], "nodeName": chosen[0]}}
            nodes[chosen[0]].take(bound)
        out.append(Placement(pod=pod["metadata"]["name"], nodes=chosen, rejected=rejected))
    return out


def gpu_resource(pod: dict[str, Any]) -> str | None:
    """The extended resource (GPU) a pod asks for, or None."""
    return next((name for name in _requests(pod) if "/" in name), None)


def free_gpus(nodes: dict[str, NodeState], resource: str = c.GPU_RESOURCE) -> int:
    """Unallocated GPUs on nodes that are ready and not cordoned."""
    return sum(
        int(max(0.0, n.free(resource))) for n in nodes.values() if n.ready and not n.unschedulable
    )


def is_kubeinfer_worker(pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return bool(
        labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY
        and labels.get(c.LABEL_COMPONENT) == c.COMPONENT_WORKER
    )
