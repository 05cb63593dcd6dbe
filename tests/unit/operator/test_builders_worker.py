"""build_worker_pod: one class per concern, tables of options."""

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubeinfer.operator.api import ModelSpec, ObjectMeta, SimulatorSpec
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.worker import (
    build_worker_pod,
    startup_budget_seconds,
    worker_pod_name,
)
from operator_helpers import make_spec

Validate = Callable[[dict[str, Any]], None]


def pod_for(meta: ObjectMeta, images: Images, **spec: Any) -> dict[str, Any]:
    return build_worker_pod(
        meta, make_spec(**spec), revision="abcdef1234", replica=3, images=images
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def arg(pod: dict[str, Any], flag: str) -> str:
    for item in container(pod)["args"]:
        if item.startswith(f"{flag}="):
            return str(item.split("=", 1)[1])
    raise AssertionError(f"{flag} not in args")


class TestShape:
    def test_valid_for_kubernetes(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        valid_manifest(pod_for(meta, images))

    def test_exactly_one_gpu_of_the_configured_resource(
        self, meta: ObjectMeta, images: Images
    ) -> None:
        pod = pod_for(meta, images, gpu={"resourceName": "nvidia.com/mig-1g.10gb"})
        resources = container(pod)["resources"]
        assert resources["limits"]["nvidia.com/mig-1g.10gb"] == "1"
        assert resources["requests"]["nvidia.com/mig-1g.10gb"] == "1"
        assert "nvidia.com/gpu" not in resources["limits"]

    def test_labels_and_owner(self, meta: ObjectMeta, images: Images) -> None:
        pod = pod_for(meta, images)
        labels = pod["metadata"]["labels"]
        assert labels["kubeinfer.io/service"] == "llm"
        assert labels["kubeinfer.io/revision"] == "abcdef1234"
        assert labels["kubeinfer.io/replica"] == "3"
        assert labels["app.kubernetes.io/component"] == "worker"
        assert labels["app.kubernetes.io/managed-by"] == "kubeinfer-operator"
        owner = pod["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "InferenceService",
            "0b9c-uid",
            True,
        )
        assert pod["metadata"]["namespace"] == "team-a"

    def test_name_is_deterministic_and_replacements_get_new_names(self) -> None:
        first = worker_pod_name("llm", "abcdef1234", 0)
        assert first == worker_pod_name("llm", "abcdef1234", 0)
        replacement = worker_pod_name("llm", "abcdef1234", 0, replaces=first)
        assert replacement != first
        assert worker_pod_name("llm", "abcdef1234", 0, replaces=replacement) not in (
            first,
            replacement,
        )
        assert len(worker_pod_name("x" * 40, "abcdef1234", 1023, replaces=first)) <= 63


class TestSecurity:
    def test_restricted_and_read_only(self, meta: ObjectMeta, images: Images) -> None:
        pod = pod_for(meta, images)
        sc = container(pod)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["spec"]["automountServiceAccountToken"] is False

    def test_writable_paths_are_volumes(self, meta: ObjectMeta, images: Images) -> None:
        mounts = {m["mountPath"] for m in container(pod_for(meta, images))["volumeMounts"]}
        assert {"/tmp", "/dev/shm", "/home/kubeinfer/.cache"} <= mounts

    def test_hub_token_only_from_a_secret(self, meta: ObjectMeta, images: Images) -> None:
        pod = pod_for(
            meta,
            images,
            model={"name": "m", "source": "org/m", "secretRef": {"name": "hf", "key": "tok"}},
        )
        env = {e["name"]: e for e in container(pod)["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "tok"}
        assert "secretRef" not in arg(pod, "--model-spec")


class TestEngine:
    def test_model_spec_is_passed_as_json(self, meta: ObjectMeta, images: Images) -> None:
        model = {
            "name": "m",
            "source": "org/m",
            "engineArgs": {"maxModelLen": 4096, "dtype": "bfloat16"},
        }
        pod = pod_for(meta, images, model=model)
        parsed = ModelSpec.model_validate_json(arg(pod, "--model-spec"))
        assert parsed.engine_args.max_model_len == 4096
        assert parsed.engine_args.dtype.value == "bfloat16"
        assert container(pod)["args"][:2] == ["--engine", "vllm"]

    def test_simulated_engine_gets_its_settings(self, meta: ObjectMeta, images: Images) -> None:
        pod = pod_for(meta, images, worker={"engine": "simulated", "simulator": {"errorRate": 0.5}})
        assert container(pod)["args"][:2] == ["--engine", "simulated"]
        assert SimulatorSpec.model_validate_json(arg(pod, "--simulator-spec")).error_rate == 0.5

    def test_pvc_source_is_mounted_read_only(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = pod_for(meta, images, model={"name": "m", "source": "pvc://weights/llama/8b"})
        valid_manifest(pod)
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "model")
        assert volume["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
        assert json.loads(arg(pod, "--model-spec"))["source"] == "/mnt/models/llama/8b"
        env = {e["name"]: e.get("value") for e in container(pod)["env"]}
        assert env["HF_HUB_OFFLINE"] == "1"

    def test_default_and_custom_image(self, meta: ObjectMeta, images: Images) -> None:
        assert container(pod_for(meta, images))["image"] == images.worker
        custom = pod_for(meta, images, worker={"image": "registry.local/w:9"})
        assert container(custom)["image"] == "registry.local/w:9"


class TestProbes:
    @pytest.mark.parametrize(
        ("model", "worker", "budget"),
        [
            ({"vramGiB": 10}, {}, 300 + 300),
            ({"vramGiB": 140}, {}, 300 + 4200),
            ({"vramGiB": 10}, {"loadTimeoutSeconds": 90}, 90),
        ],
    )
    def test_startup_budget_grows_with_model_size(
        self, model: dict[str, Any], worker: dict[str, Any], budget: int
    ) -> None:
        spec = make_spec(model={"name": "m", "source": "org/x", **model}, worker=worker)
        assert startup_budget_seconds(spec) == budget

    def test_probes_point_at_the_agent(self, meta: ObjectMeta, images: Images) -> None:
        c = container(pod_for(meta, images, model={"name": "m", "source": "org/x", "vramGiB": 10}))
        assert c["startupProbe"]["httpGet"] == {"path": "/ready", "port": "agent"}
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 600
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/live"

    def test_grace_period_covers_the_drain(self, meta: ObjectMeta, images: Images) -> None:
        pod = pod_for(meta, images, worker={"drainSeconds": 120})
        assert pod["spec"]["terminationGracePeriodSeconds"] == 150
        assert "--drain-seconds=120" in container(pod)["args"]


class TestPlacement:
    def test_product_and_memory_selectors(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = pod_for(meta, images, gpu={"product": "NVIDIA-H100-80GB-HBM3", "minMemoryMiB": 40000})
        valid_manifest(pod)
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        term = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["39999"]}
        ]

    @pytest.mark.parametrize(
        ("placement", "has_spread", "has_pod_affinity", "prefers_memory"),
        [
            ("spread", True, False, False),
            ("pack", False, True, False),
            ("largest-first", False, False, True),
            ("isolation", False, False, False),
        ],
    )
    def test_placement(
        self,
        meta: ObjectMeta,
        images: Images,
        valid_manifest: Validate,
        placement: str,
        has_spread: bool,
        has_pod_affinity: bool,
        prefers_memory: bool,
    ) -> None:
        pod = pod_for(meta, images, gpu={"placement": placement})
        valid_manifest(pod)
        affinity = pod["spec"].get("affinity", {})
        assert ("topologySpreadConstraints" in pod["spec"]) is has_spread
        assert ("podAffinity" in affinity) is has_pod_affinity
        assert ("nodeAffinity" in affinity) is prefers_memory

    def test_avoid_nodes_is_a_preference(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = build_worker_pod(
            meta,
            make_spec(),
            revision="abcdef1234",
            replica=0,
            images=images,
            avoid_nodes=("gpu-2",),
        )
        valid_manifest(pod)
        preferred = pod["spec"]["affinity"]["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert preferred[-1]["preference"]["matchExpressions"][0]["values"] == ["gpu-2"]

    def test_lost_nodes_are_excluded_outright(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = build_worker_pod(
            meta,
            make_spec(gpu={"minMemoryMiB": 40000}),
            revision="abcdef1234",
            replica=0,
            images=images,
            exclude_nodes=("gpu-3", "gpu-1"),
        )
        valid_manifest(pod)
        required = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        (term,) = required["nodeSelectorTerms"]
        assert {
            "key": "kubernetes.io/hostname",
            "operator": "NotIn",
            "values": ["gpu-1", "gpu-3"],
        } in term["matchExpressions"]
        assert len(term["matchExpressions"]) == 2  # ANDed with the memory rule

    def test_isolation_keeps_every_other_kubeinfer_worker_off_the_node(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        pod = pod_for(meta, images, gpu={"placement": "isolation"})
        valid_manifest(pod)
        (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["namespaceSelector"] == {}  # every namespace
        assert term["labelSelector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": "kubeinfer-operator",
            "app.kubernetes.io/component": "worker",
        }

    def test_manual_pinning_joins_kubeinfers_own_rules(
        self, meta: ObjectMeta, images: Images, valid_manifest: Validate
    ) -> None:
        zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
        pool = {"key": "pool", "operator": "Exists"}
        pod = build_worker_pod(
            meta,
            make_spec(
                gpu={
                    "product": "NVIDIA-H100-80GB-HBM3",
                    "nodeSelector": {"pool": "llm"},
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [zone]},
                                {"matchExpressions": [pool]},
                            ]
                        },
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 7, "preference": {"matchExpressions": [pool]}}
                        ],
                    },
                }
            ),
            revision="abcdef1234",
            replica=0,
            images=images,
            exclude_nodes=("gpu-3",),
        )
        valid_manifest(pod)
        assert pod["spec"]["nodeSelector"] == {
            "pool": "llm",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        }
        node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
        lost = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["gpu-3"]}
        # Terms are ORed: the lost node stays excluded whichever term matches.
        assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] == {
            "nodeSelectorTerms": [
                {"matchExpressions": [{**zone}, lost]},
                {"matchExpressions": [{**pool, "values": []}, lost]},
            ]
        }
        assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 7

    def test_gpu_taint_always_tolerated_plus_users(self, meta: ObjectMeta, images: Images) -> None:
        pod = pod_for(
            meta,
            images,
            gpu={"tolerations": [{"key": "dedicated", "value": "llm", "effect": "NoSchedule"}]},
        )
        keys = [t.get("key") for t in pod["spec"]["tolerations"]]
        assert keys == ["nvidia.com/gpu", "dedicated"]
