"""`preview` (pure): the operator's own planner and builders on a cluster
given as plain objects, plus the inventory and `top`'s merge of routers."""

from typing import Any

import pytest
from debugdoc import document
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.revision import compute_revision, revision_template
from kubeinfer.operator.builders.worker import build_worker_pod, worker_image
from kubeinfer.operator.inventory import build_inventory
from kubeinfer.operator.preview import changed_fields, preview
from kubeinfer.operator.topcli import live_rates, merge_routers
from operator_helpers import make_spec
from test_placement import node

NOW = 1_000_000.0


def isvc(**spec: Any) -> dict[str, Any]:
    raw = {"model": {"name": "m", "source": "org/model-7b"}, "replicas": 2, **spec}
    return {
        "apiVersion": "kubeinfer.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "svc", "namespace": "ns"},
        "spec": make_spec(**raw).model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def running(obj: dict[str, Any], nodes: list[str]) -> tuple[dict[str, Any], list[dict]]:
    """``obj`` as the operator leaves it: stable revision, ready pods on ``nodes``."""
    spec = make_spec(**obj["spec"])
    revision = compute_revision(spec, worker_image(spec, Images()))
    pods = []
    for replica, where in enumerate(nodes):
        pod = build_worker_pod(
            ObjectMeta(name="svc", namespace="ns"),
            spec,
            revision=revision,
            replica=replica,
            images=Images(),
        )
        pod["spec"]["nodeName"] = where
        pod["status"] = {
            "phase": "Running",
            "podIP": f"127.1.0.{replica + 2}",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        pods.append(pod)
    current = {
        **obj,
        "status": {
            "stableRevision": revision,
            "revisionHistory": [
                {"number": 1, "revision": revision, "template": revision_template(spec)}
            ],
        },
    }
    return current, pods


def test_a_fresh_service_takes_gpus_on_the_nodes_its_rules_allow() -> None:
    nodes = [node("h100-0"), node("a400", product="NVIDIA-RTX-A400", memory_mib=4096, gpus=2)]
    p = preview(isvc(gpu={"placement": "largest-first"}), None, nodes=nodes, pods=[], now=NOW)
    assert not p.exists
    assert p.rollout.startswith("create: 2 worker pod(s)")
    assert [pod.nodes for pod in p.pods] == [("h100-0",), ("h100-0",)]
    assert p.gpus_free == 6
    # The model is 7B (~16.6 GiB): too big for the A400 only.
    assert p.warnings == [
        "model needs ~16.6 GiB, GPU NVIDIA-RTX-A400 has 4 GiB (3.6 GiB at gpuMemoryUtilization 0.9)"
    ]


def test_unchanged_spec_is_no_change_and_a_scale_is_in_place() -> None:
    current, pods = running(isvc(), ["h100-0", "h100-0"])
    nodes = [node("h100-0")]
    same = preview(isvc(), current, nodes=nodes, pods=pods, now=NOW)
    assert same.rollout == "no change"
    assert not same.pods
    bigger = preview(isvc(replicas=4), current, nodes=nodes, pods=pods, now=NOW)
    assert bigger.rollout == "in place: no new revision, no pod is replaced; replicas 2 -> 4"
    assert bigger.changed == ["spec.replicas"]
    assert [pod.nodes for pod in bigger.pods] == [("h100-0",), ("h100-0",)]
    too_big = preview(isvc(replicas=5), current, nodes=nodes, pods=pods, now=NOW)
    assert [bool(pod.nodes) for pod in too_big.pods] == [True, True, False]
    assert too_big.warnings[-1].startswith("1 of 3 new worker pod(s) cannot be placed now")


def test_a_new_revision_is_a_canary_and_surge_needs_free_gpus() -> None:
    current, pods = running(isvc(), ["h100-0", "h100-0"])
    changed = isvc(model={"name": "m", "source": "org/model-8b"})
    roomy = preview(changed, current, nodes=[node("h100-0")], pods=pods, now=NOW)
    assert roomy.new_revision
    assert roomy.changed == ["spec.model.source"]
    assert [(s.weight, s.canary_pods, s.stable_pods) for s in roomy.steps] == [
        (10, 1, 2),
        (25, 1, 2),
        (50, 1, 2),
        (100, 2, 1),
    ]
    assert roomy.gpus_needed == 3
    assert [pod.revision for pod in roomy.pods] == [roomy.revision]
    assert not [w for w in roomy.warnings if "maxSurge" in w]
    full = preview(changed, current, nodes=[node("h100-0", gpus=2)], pods=pods, now=NOW)
    assert "not enough free GPUs for maxSurge" in full.warnings[-1]
    assert not full.pods[0].nodes


@pytest.mark.parametrize(
    ("old", "new", "paths"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, ["spec.a"]),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, ["spec.a.c"]),
        ({"a": [1]}, {"a": [1, 2]}, ["spec.a"]),
        ({}, {"x": 1}, ["spec.x"]),
    ],
)
def test_changed_fields(old: dict, new: dict, paths: list[str]) -> None:
    assert changed_fields(old, new) == paths


def test_inventory_keeps_nodes_without_feature_discovery_labels() -> None:
    bare = node("bare", product=None, memory_mib=None, gpus=2)
    cpu = node("cpu-only", product=None, memory_mib=None, gpus=0)
    _, pods = running(isvc(), ["bare"])
    other = {
        "metadata": {"name": "job", "namespace": "x", "labels": {}},
        "spec": {
            "nodeName": "bare",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }
    rows = build_inventory([bare, cpu], [*pods, other], [])
    (row,) = rows
    assert (row.node, row.product, row.memory_mib, row.allocatable, row.allocated) == (
        "bare",
        None,
        None,
        2,
        2,
    )
    assert row.other_pods == 1
    assert [(w.service, w.replica, w.health) for w in row.workers] == [("svc", 0, None)]


def test_top_adds_routers_up_and_takes_the_worst_percentiles() -> None:
    def doc(in_flight: int, requests: int, p99: float, oldest: float | None) -> dict:
        return document(
            {
                "name": "w0",
                "revision": "r1",
                "healthy": True,
                "ejected": False,
                "inFlight": in_flight,
                "queueDepth": 1,
                "oldestRunningSeconds": oldest,
                "window": {
                    "seconds": 10.0,
                    "requests": requests,
                    "p50LatencyMs": 5.0,
                    "p99LatencyMs": p99,
                    "p50TtftMs": 1.0,
                },
                "gpu": {
                    "utilizationPercent": 40,
                    "memoryUsedBytes": 2**30,
                    "memoryTotalBytes": 4 * 2**30,
                },
            }
        )

    (row,) = merge_routers("svc", [doc(2, 30, 80.0, 1.5), doc(1, 20, 120.0, None)], {"r1": 90})
    assert (row.in_flight, row.requests, row.p99_ms, row.oldest_s) == (3, 50, 120.0, 1.5)
    assert row.rps == 5.0
    assert (row.weight, row.gpu_util, row.gpu_used_mib, row.gpu_total_mib) == (90, 40, 1024, 4096)


def test_the_live_view_rates_requests_between_refreshes() -> None:
    def rows(total: int) -> list:
        doc = document(
            {
                "name": "w0",
                "revision": "r1",
                "healthy": True,
                "requests": total,
                "window": {"seconds": 60.0, "requests": 60},
            }
        )
        return merge_routers("svc", [doc], {})

    first = rows(100)
    counts = live_rates(first, {}, 10.0)
    assert first[0].rps == 1.0  # no earlier refresh: the window's average
    second = rows(130)
    live_rates(second, counts, 12.0)
    assert second[0].rps == 15.0


def test_gpus_table_names_a_node_without_feature_discovery_labels() -> None:
    from kubeinfer.operator.gpuscli import render_inventory

    bare = node("bare", product=None, memory_mib=None, gpus=2)
    _, pods = running(isvc(), ["bare"])
    text = render_inventory(build_inventory([bare], pods, []))
    header, row = text.splitlines()[:2]
    assert header.split()[:4] == ["NODE", "READY", "PRODUCT", "MEMORY"]
    assert row.startswith("bare")
    assert "(no GPU feature discovery labels)" in row
    assert "1/2" in row  # allocated/allocatable
    assert "svc-" in text.split("\n\n")[1]  # the worker table


def test_top_table_shows_weight_gpu_and_age() -> None:
    from kubeinfer.operator.topcli import render_top

    doc = document(
        {
            "name": "w0",
            "revision": "r1",
            "healthy": True,
            "inFlight": 3,
            "queueDepth": 2,
            "oldestRunningSeconds": 12.34,
            "window": {
                "seconds": 10.0,
                "requests": 25,
                "p50LatencyMs": 812.0,
                "p99LatencyMs": 2100.0,
                "p50TtftMs": 4.25,
            },
            "gpu": {
                "utilizationPercent": 87,
                "memoryUsedBytes": 72 * 2**30,
                "memoryTotalBytes": 80 * 2**30,
            },
        }
    )
    (line,) = render_top(merge_routers("svc", [doc], {"r1": 25})).splitlines()[1:]
    assert line.split() == [
        "svc",
        "w0",
        "r1",
        "25%",
        "True",
        "3",
        "2",
        "2.5",
        "812ms",
        "2100ms",
        "4.2ms",
        "87%",
        "72.0/80.0Gi",
        "12.3s",
    ]
