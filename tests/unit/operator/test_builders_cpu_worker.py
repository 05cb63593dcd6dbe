"""build_worker_pod with gpu.count 0: vLLM's CPU backend, no GPU anywhere in the pod."""

from collections.abc import Callable
from typing import Any

import pytest
from kubeinfer.operator.api import ObjectMeta
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.cpubackend import (
    cpu_kv_cache_gib,
    cpu_memory_warnings,
    cpu_threads,
    quantity_gib,
)
from kubeinfer.operator.builders.worker import build_worker_pod
from operator_helpers import make_spec

Validate = Callable[[dict[str, Any]], None]
CPU = {"count": 0}


def pod_for(meta: ObjectMeta, images: Images, **spec: Any) -> dict[str, Any]:
    return build_worker_pod(
        meta, make_spec(**spec), revision="abcdef1234", replica=0, images=images
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container(pod)["env"]}


class TestDevice:
    @pytest.mark.parametrize(
        ("gpu", "worker", "image", "device_args", "gpu_requested"),
        [
            ({}, {}, "ghcr.io/kubeinfer/worker:test", [], True),
            (CPU, {}, "ghcr.io/kubeinfer/worker-cpu:test", ["--device=cpu"], False),
            (CPU, {"image": "registry.local/w:9"}, "registry.local/w:9", ["--device=cpu"], False),
            (
                {"count": 0, "resourceName": "nvidia.com/mig-1g.10gb"},
                {},
                "ghcr.io/kubeinfer/worker-cpu:test",
                ["--device=cpu"],
                False,
            ),
            (
                CPU,
                {"engine": "simulated"},
                "ghcr.io/kubeinfer/worker-cpu:test",
                ["--device=cpu"],
                False,
            ),
        ],
    )
    def test_image_flag_and_resources(
        self,
        meta: ObjectMeta,
        images: Images,
        valid_manifest: Validate,
        gpu: dict[str, Any],
        worker: dict[str, Any],
        image: str,
        device_args: list[str],
        gpu_requested: bool,
    ) -> None:
        pod = pod_for(meta, images, gpu=gpu, worker=worker)
        valid_manifest(pod)
        assert container(pod)["image"] == image
        assert [a for a in container(pod)["args"] if a.startswith("--device")] == device_args
        resources = container(pod)["resources"]
        extended = {n for part in resources.values() for n in part if "/" in n}
        assert bool(extended) is gpu_requested
        assert resources["requests"]["cpu"] == "4"
        assert resources["limits"]["memory"] == "32Gi"

    def test_cpu_worker_keeps_the_restricted_security_context(
        self, meta: ObjectMeta, images: Images
    ) -> None:
        gpu_pod, cpu_pod = pod_for(meta, images), pod_for(meta, images, gpu=CPU)
        assert container(cpu_pod)["securityContext"] == container(gpu_pod)["securityContext"]
        assert cpu_pod["spec"]["securityContext"] == gpu_pod["spec"]["securityContext"]
        assert container(cpu_pod)["securityContext"]["readOnlyRootFilesystem"] is True


class TestKvCache:
    @pytest.mark.parametrize(
        ("model", "memory", "gib"),
        [
            ({"vramGiB": 2}, "32Gi", 15),  # (32 - 2) / 2
            ({"vramGiB": 2}, "8Gi", 3),
            ({"source": "org/bert"}, "16Gi", 8),  # size unknown: half the memory
            ({"vramGiB": 40}, "32Gi", 1),  # does not fit: vLLM says so itself
            ({"vramGiB": 1}, "4096Mi", 1),
            ({"vramGiB": 1}, "10G", 4),  # 9.31 GiB
        ],
    )
    def test_derived_from_memory_and_model(
        self, meta: ObjectMeta, images: Images, model: dict[str, Any], memory: str, gib: int
    ) -> None:
        raw_model = {"name": "m", "source": "org/m", **model}
        spec = make_spec(model=raw_model, gpu=CPU, worker={"resources": {"memory": memory}})
        assert cpu_kv_cache_gib(spec) == gib
        pod = pod_for(
            meta, images, model=raw_model, gpu=CPU, worker={"resources": {"memory": memory}}
        )
        assert env(pod)["VLLM_CPU_KVCACHE_SPACE"] == str(gib)

    def test_only_cpu_workers_get_it(self, meta: ObjectMeta, images: Images) -> None:
        assert "VLLM_CPU_KVCACHE_SPACE" not in env(pod_for(meta, images))

    @pytest.mark.parametrize(
        ("quantity", "gib"),
        [("1Gi", 1.0), ("512Mi", 0.5), ("1Ti", 1024.0), ("2.5Gi", 2.5), ("1073741824", 1.0)],
    )
    def test_quantities(self, quantity: str, gib: float) -> None:
        assert quantity_gib(quantity) == gib

    def test_not_a_quantity(self) -> None:
        with pytest.raises(ValueError, match="not a memory quantity"):
            quantity_gib("lots")

    @pytest.mark.parametrize(
        ("gpu", "vram", "memory", "warned"),
        [
            (CPU, 40, "32Gi", True),
            (CPU, 20, "32Gi", False),
            ({}, 40, "32Gi", False),  # GPU workers: the VRAM check's business
        ],
    )
    def test_memory_warning(
        self, gpu: dict[str, Any], vram: float, memory: str, warned: bool
    ) -> None:
        spec = make_spec(
            model={"name": "m", "source": "org/m", "vramGiB": vram},
            gpu=gpu,
            worker={"resources": {"memory": memory}},
        )
        warnings = cpu_memory_warnings(spec)
        expected = "model needs ~40.0 GiB, a CPU worker has 32.0 GiB (worker.resources.memory)"
        assert warnings == ([expected] if warned else [])


class TestPlacement:
    def test_no_gpu_toleration_only_the_users(self, meta: ObjectMeta, images: Images) -> None:
        assert "tolerations" not in pod_for(meta, images, gpu=CPU)["spec"]
        own = {"key": "dedicated", "value": "llm", "effect": "NoSchedule"}
        pod = pod_for(meta, images, gpu={**CPU, "tolerations": [own]})
        assert [t.get("key") for t in pod["spec"]["tolerations"]] == ["dedicated"]

    def test_no_gpu_node_selector_and_prefers_nodes_without_gpus(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = pod_for(meta, images, gpu=CPU)
        valid_manifest(pod)
        assert "nodeSelector" not in pod["spec"]
        node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in node_affinity
        (preferred,) = node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred["preference"]["matchExpressions"] == [
            {"key": "nvidia.com/gpu.product", "operator": "DoesNotExist"}
        ]

    @pytest.mark.parametrize(
        ("placement", "has_spread", "has_pod_affinity"),
        [("spread", True, False), ("pack", False, True)],
    )
    def test_placement_still_applies(
        self,
        meta: ObjectMeta,
        images: Images,
        valid_manifest: Validate,
        placement: str,
        has_spread: bool,
        has_pod_affinity: bool,
    ) -> None:
        pod = pod_for(meta, images, gpu={**CPU, "placement": placement})
        valid_manifest(pod)
        assert ("topologySpreadConstraints" in pod["spec"]) is has_spread
        assert ("podAffinity" in pod["spec"]["affinity"]) is has_pod_affinity

    def test_failed_nodes_are_still_avoided(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = build_worker_pod(
            meta,
            make_spec(gpu=CPU),
            revision="abcdef1234",
            replica=0,
            images=images,
            avoid_nodes=("cpu-2",),
            exclude_nodes=("cpu-3",),
        )
        valid_manifest(pod)
        node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
        preferred = node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred[-1]["preference"]["matchExpressions"][0]["values"] == ["cpu-2"]
        (term,) = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert term["matchExpressions"][0]["values"] == ["cpu-3"]


class TestThreads:
    """One OpenMP thread per requested core, unpinned (no static CPU manager assumed)."""

    @pytest.mark.parametrize(
        ("cpu", "threads"), [("4", 4), ("2.5", 2), ("500m", 1), ("1500m", 1), ("16", 16)]
    )
    def test_one_thread_per_whole_core(
        self, meta: ObjectMeta, images: Images, cpu: str, threads: int
    ) -> None:
        assert cpu_threads(cpu) == threads
        pod = pod_for(meta, images, gpu=CPU, worker={"resources": {"cpu": cpu}})
        assert env(pod)["OMP_NUM_THREADS"] == str(threads)
        assert env(pod)["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"

    def test_gpu_workers_leave_threads_to_vllm(self, meta: ObjectMeta, images: Images) -> None:
        assert "OMP_NUM_THREADS" not in env(pod_for(meta, images))
