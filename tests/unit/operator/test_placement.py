"""The placement model (kubeinfer.operator.placement) on worker pods built by
the operator's own builder, one table per rule."""

from typing import Any

import pytest
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.worker import build_worker_pod
from kubeinfer.operator.placement import (
    NodeState,
    expression_matches,
    node_states,
    place_pods,
    quantity,
    why_not,
)
from operator_helpers import make_spec


def node(
    name: str,
    *,
    gpus: int = 4,
    memory_mib: int | None = 81559,
    product: str | None = "NVIDIA-H100-80GB-HBM3",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    ready: bool = True,
    cordoned: bool = False,
) -> dict[str, Any]:
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if product:
        all_labels["nvidia.com/gpu.product"] = product
    if memory_mib:
        all_labels["nvidia.com/gpu.memory"] = str(memory_mib)
    allocatable = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"taints": taints or [], "unschedulable": cordoned},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def worker(service: str = "svc", replica: int = 0, namespace: str = "ns", **spec: Any) -> dict:
    return build_worker_pod(
        ObjectMeta(name=service, namespace=namespace),
        make_spec(**spec),
        revision="rev0000000",
        replica=replica,
        images=Images(),
    )


def bound(pod: dict[str, Any], node_name: str) -> dict[str, Any]:
    return {**pod, "spec": {**pod["spec"], "nodeName": node_name}}


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("4Gi", 4 * 2**30), ("2", 2.0), ("128Mi", 128 * 2**20), ("1k", 1000.0)],
)
def test_quantity(text: str, value: float) -> None:
    assert quantity(text) == value


def test_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity("lots")


@pytest.mark.parametrize(
    ("expr", "labels", "matches"),
    [
        ({"key": "a", "operator": "In", "values": ["x"]}, {"a": "x"}, True),
        ({"key": "a", "operator": "In", "values": ["x"]}, {"a": "y"}, False),
        ({"key": "a", "operator": "NotIn", "values": ["x"]}, {}, True),
        ({"key": "a", "operator": "Exists"}, {"a": ""}, True),
        ({"key": "a", "operator": "DoesNotExist"}, {"a": "1"}, False),
        ({"key": "m", "operator": "Gt", "values": ["40000"]}, {"m": "81559"}, True),
        ({"key": "m", "operator": "Gt", "values": ["40000"]}, {"m": "4096"}, False),
        ({"key": "m", "operator": "Lt", "values": ["40000"]}, {"m": "4096"}, True),
        ({"key": "m", "operator": "Gt", "values": ["1"]}, {}, False),
    ],
)
def test_node_selector_expressions(expr: dict, labels: dict, matches: bool) -> None:
    assert expression_matches(expr, labels) is matches


def _state(n: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> NodeState:
    return node_states([n], pods or [], set())[n["metadata"]["name"]]


@pytest.mark.parametrize(
    ("the_node", "spec", "reason"),
    [
        (node("a"), {}, None),
        (node("a", ready=False), {}, "node not ready"),
        (node("a", cordoned=True), {}, "node cordoned"),
        (
            node("a", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
            {},
            "taint dedicated=x:NoSchedule",
        ),
        # GPU nodes' usual taint is tolerated by every GPU worker.
        (node("a", taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]), {}, None),
        (
            node("a", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
            {"gpu": {"tolerations": [{"key": "dedicated", "value": "x"}]}},
            None,
        ),
        (node("a"), {"gpu": {"product": "NVIDIA-RTX-A400"}}, "nodeSelector"),
        (node("a", labels={"pool": "x"}), {"gpu": {"nodeSelector": {"pool": "x"}}}, None),
        (node("a"), {"gpu": {"nodeSelector": {"pool": "x"}}}, "nodeSelector pool=x"),
        (node("a", memory_mib=4096), {"gpu": {"minMemoryMiB": 40000}}, "node affinity"),
        (
            node("a", labels={"zone": "b"}),
            {
                "gpu": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "zone", "operator": "In", "values": ["a"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            "node affinity",
        ),
        (node("a", gpus=0), {}, "no free nvidia.com/gpu (0/0 allocated)"),
        # A CPU worker needs no GPU.
        (node("a", gpus=0, product=None, memory_mib=None), {"gpu": {"count": 0}}, None),
    ],
)
def test_filters(the_node: dict, spec: dict, reason: str | None) -> None:
    got = why_not(worker(**spec), _state(the_node))
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(reason)


def test_full_node_and_isolation_both_ways() -> None:
    full = node("a", gpus=1)
    other = bound(worker(service="other", namespace="elsewhere"), "a")
    assert why_not(worker(), _state(full, [other])) == "no free nvidia.com/gpu (1/1 allocated)"
    roomy = node("b", gpus=8)
    neighbour = bound(worker(service="other", namespace="elsewhere"), "b")
    # Isolation: not beside another kubeinfer worker, of any namespace...
    assert why_not(worker(gpu={"placement": "isolation"}), _state(roomy, [neighbour])) == (
        "another kubeinfer worker is on it (isolation)"
    )
    # ...and no worker beside an isolated one.
    isolated = bound(worker(service="iso", gpu={"placement": "isolation"}), "b")
    assert why_not(worker(), _state(roomy, [isolated])) == "an isolated kubeinfer worker is on it"
    # A pod that is not a kubeinfer worker may share the node.
    plain = {"metadata": {"name": "x", "namespace": "ns", "labels": {}}, "spec": {"nodeName": "b"}}
    assert why_not(worker(gpu={"placement": "isolation"}), _state(roomy, [plain])) is None


def _place(pods: list[dict], nodes: list[dict], existing: list[dict] | None = None) -> list:
    return place_pods(pods, node_states(nodes, existing or [], set()))


def test_largest_first_prefers_the_biggest_gpus() -> None:
    nodes = [node("small", memory_mib=24_000), node("big-a"), node("big-b")]
    placed = _place([worker(gpu={"placement": "largest-first"})], nodes)
    assert placed[0].nodes == ("big-a", "big-b")


def test_spread_goes_to_the_emptiest_node_and_pack_to_the_fullest() -> None:
    nodes = [node("a"), node("b")]
    existing = [bound(worker(replica=0), "a")]
    assert _place([worker(replica=1)], nodes, existing)[0].nodes == ("b",)
    packed = [bound(worker(replica=0, gpu={"placement": "pack"}), "a")]
    assert _place([worker(replica=1, gpu={"placement": "pack"})], nodes, packed)[0].nodes == ("a",)


def test_pods_take_gpus_one_after_another_until_none_is_left() -> None:
    nodes = [node("a", gpus=2), node("b", gpus=1)]
    placed = _place([worker(replica=i) for i in range(4)], nodes)
    assert [p.placed for p in placed] == [True, True, True, False]
    assert placed[3].rejected == {
        "a": "no free nvidia.com/gpu (2/2 allocated)",
        "b": "no free nvidia.com/gpu (1/1 allocated)",
    }


def test_terminated_and_leaving_pods_free_their_gpus() -> None:
    n = node("a", gpus=1)
    done = bound(worker(replica=0), "a")
    done["status"] = {"phase": "Failed"}
    assert why_not(worker(replica=1), _state(n, [done])) is None
    running = bound(worker(replica=0), "a")
    name = running["metadata"]["name"]
    states = node_states([n], [running], {("ns", name)})
    assert why_not(worker(replica=1), states["a"]) is None
