"""Whether a worker pod has a GPU, as the operator reads it back, and where it shows."""

from typing import Any

import pytest
from kubeinfer.operator.api import ObjectMeta
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.router import build_router_deployment
from kubeinfer.operator.builders.worker import build_worker_pod
from kubeinfer.operator.observe import observe_pod
from operator_helpers import make_spec
from sim_world import SimWorld, base_spec


@pytest.mark.parametrize(
    ("gpu", "has_gpu"),
    [
        ({}, True),
        ({"resourceName": "nvidia.com/mig-1g.10gb"}, True),
        ({"resourceName": "amd.com/gpu"}, True),
        ({"count": 0}, False),
    ],
)
def test_worker_pods(meta: ObjectMeta, images: Images, gpu: dict[str, Any], has_gpu: bool) -> None:
    pod = build_worker_pod(meta, make_spec(gpu=gpu), revision="r", replica=0, images=images)
    assert observe_pod(pod).has_gpu is has_gpu


def test_router_pods_have_none(meta: ObjectMeta, images: Images) -> None:
    deployment = build_router_deployment(meta, make_spec(), images=images)
    pod = {"metadata": {"name": "router-x"}, "spec": deployment["spec"]["template"]["spec"]}
    assert observe_pod(pod).has_gpu is False


@pytest.mark.parametrize(
    ("gpu", "product"),
    [
        ({}, "NVIDIA-H100-80GB-HBM3"),
        # A CPU worker that landed on a GPU node does not use its GPU.
        ({"count": 0}, None),
    ],
)
def test_status_rows_name_a_gpu_only_for_gpu_workers(
    gpu: dict[str, Any], product: str | None
) -> None:
    world = SimWorld(base_spec(gpu=gpu, replicas=2))
    world.reconcile()
    world.make_ready()
    world.reconcile()
    rows = world.status["replicaStatuses"]
    assert len(rows) == 2
    assert all(row["node"].startswith("gpu-") for row in rows)
    assert [row.get("gpuProduct") for row in rows] == [product, product]
