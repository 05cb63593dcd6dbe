"""The worker Pod: one GPU (or none), one engine, one replica of an InferenceService.

The operator owns these pods directly (no Deployment): it picks which pod
to replace, labels each with its revision and replica index, and sizes
canaries in whole GPUs.
"""

import hashlib
import math
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.api.spec import InferenceServiceSpec, ModelSpec, Placement
from kubeinfer.operator.builders.common import (
    Images,
    child_metadata,
    component_labels,
    field_env,
    restricted_container_security,
    restricted_pod_security,
    scrape_annotations,
    secret_env,
    worker_selector,
)
from kubeinfer.operator.builders.cpubackend import cpu_kv_cache_gib, cpu_thread_env
from kubeinfer.operator.vram import LABEL_GPU_PRODUCT, estimate_vram_gib

# Where a pvc:// model source is mounted (KServe's convention).
MODEL_MOUNT = "/mnt/models"
# Writable places for a read-only root filesystem: vLLM and the HF hub
# write caches, torch compiles kernels, NCCL wants shared memory.
CACHE_MOUNT = "/home/kubeinfer/.cache"
# Startup budget: fixed overhead plus time per GiB of weights, so a 70B
# model is not killed while it is still loading (vLLM listens only when
# the model is loaded).
STARTUP_BASE_SECONDS = 300
STARTUP_SECONDS_PER_GIB = 30
# Probed often: a worker that scaling added enters rotation within 2 s of
# its model being loaded, not up to 10 s later (the probe is one small GET).
STARTUP_PERIOD_SECONDS = 2
# Memory buckets for largest-first placement (MiB, GFD's unit).
LARGEST_FIRST_BUCKETS = ((80_000, 100), (40_000, 60), (20_000, 30))
# CPU workers prefer nodes without GPUs (no GPU product label), so that
# they leave GPU nodes' CPUs and memory to the pods that need the GPUs;
# weaker than avoiding a node where the replica failed before.
CPU_AWAY_FROM_GPUS_WEIGHT = 50
# Every kubeinfer worker pod, whatever its service (isolation placement).
ANY_KUBEINFER_WORKER = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_COMPONENT: c.COMPONENT_WORKER}


def worker_image(spec: InferenceServiceSpec, images: Images) -> str:
    """The image a worker pod runs: the spec's own, else ours for its device."""
    if spec.worker.image:
        return spec.worker.image
    return images.worker_cpu if spec.gpu.cpu_only else images.worker


def worker_pod_name(service: str, revision: str, replica: int, replaces: str | None = None) -> str:
    """A deterministic name: the same inputs give the same name, so an
    operator that restarts between "create" and "record in status" gets a
    409 instead of a duplicate pod. A replacement derives its suffix from
    the pod it replaces, so it always gets a new name."""
    nonce = hashlib.sha256((replaces or "initial").encode()).hexdigest()[:5]
    return f"{service}-{revision[:8]}-{replica}-{nonce}"


def startup_budget_seconds(spec: InferenceServiceSpec) -> int:
    if spec.worker.load_timeout_seconds is not None:
        return spec.worker.load_timeout_seconds
    vram = estimate_vram_gib(spec.model) or 0.0
    return STARTUP_BASE_SECONDS + math.ceil(vram * STARTUP_SECONDS_PER_GIB)


def engine_model_spec(model: ModelSpec) -> ModelSpec:
    """The model spec as the worker sees it: pvc:// becomes the mount path,
    and the secret reference stays out (the token arrives as HF_TOKEN)."""
    source = model.source
    if source.startswith("pvc://"):
        _claim, _, path = source.removeprefix("pvc://").partition("/")
        source = f"{MODEL_MOUNT}/{path}".rstrip("/")
    return model.model_copy(update={"source": source, "secret_ref": None})


def _worker_args(spec: InferenceServiceSpec) -> list[str]:
    model_json = engine_model_spec(spec.model).model_dump_json(by_alias=True, exclude_none=True)
    args = [
        "--engine",
        spec.worker.engine.value,
        f"--model-spec={model_json}",
        f"--port={c.WORKER_HTTP_PORT}",
        f"--agent-port={c.WORKER_AGENT_PORT}",
        f"--drain-seconds={spec.worker.drain_seconds}",
    ]
    if spec.worker.engine.value == "simulated":
        sim_json = spec.worker.simulator.model_dump_json(by_alias=True, exclude_none=True)
        args.append(f"--simulator-spec={sim_json}")
    if spec.gpu.cpu_only:
        # Only when there is no GPU: a GPU pod's command line stays what
        # older worker images (pinned in spec.worker.image) understand.
        args.append(f"--device={c.WORKER_DEVICE_CPU}")
    return args


def _volumes(spec: InferenceServiceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    if spec.model.source.startswith("pvc://"):
        claim = spec.model.source.removeprefix("pvc://").split("/", 1)[0]
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    return volumes, mounts


def _env(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    env = [
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
        {"name": "HOME", "value": "/home/kubeinfer"},
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
    ]
    if spec.model.source.startswith(("/", "pvc://")):
        # Local weights: never reach out to the hub.
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if spec.model.secret_ref is not None:
        ref = spec.model.secret_ref
        env.append(secret_env("HF_TOKEN", ref.name, ref.key))
    if spec.gpu.cpu_only:
        env.append({"name": c.ENV_VLLM_CPU_KVCACHE_SPACE, "value": str(cpu_kv_cache_gib(spec))})
        env += cpu_thread_env(spec)
    return env


def _not_on(nodes: tuple[str, ...]) -> dict[str, Any]:
    return {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": sorted(nodes)}


def _affinity(
    spec: InferenceServiceSpec,
    service: str,
    avoid_nodes: tuple[str, ...],
    exclude_nodes: tuple[str, ...],
) -> dict[str, Any]:
    required: list[dict[str, Any]] = []
    if exclude_nodes:
        required.append(_not_on(exclude_nodes))
    if spec.gpu.min_memory_mi_b is not None:
        required.append(
            {
                "key": c.LABEL_GPU_MEMORY,
                "operator": "Gt",
                "values": [str(spec.gpu.min_memory_mi_b - 1)],
            }
        )
    affinity: dict[str, Any] = {}
    node_affinity: dict[str, Any] = {}
    user = spec.gpu.node_affinity
    user_required = user.required_during_scheduling_ignored_during_execution if user else None
    if user_required is not None:
        # Terms are ORed, expressions within a term ANDed: kubeinfer's own
        # rules must hold whichever of the user's terms a node matches.
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [
                {"matchExpressions": [e.to_dict() for e in term.match_expressions] + required}
                for term in user_required.node_selector_terms
            ]
        }
    elif required:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    if user is not None and user.preferred_during_scheduling_ignored_during_execution:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            t.to_dict() for t in user.preferred_during_scheduling_ignored_during_execution
        ]
    if spec.gpu.placement is Placement.LARGEST_FIRST:
        node_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).extend(
            {
                "weight": weight,
                "preference": {
                    "matchExpressions": [
                        {"key": c.LABEL_GPU_MEMORY, "operator": "Gt", "values": [str(mib)]}
                    ]
                },
            }
            for mib, weight in LARGEST_FIRST_BUCKETS
        )
    if spec.gpu.cpu_only:
        node_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {
                "weight": CPU_AWAY_FROM_GPUS_WEIGHT,
                "preference": {
                    "matchExpressions": [{"key": LABEL_GPU_PRODUCT, "operator": "DoesNotExist"}]
                },
            }
        )
    if avoid_nodes:
        node_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {"weight": 100, "preference": {"matchExpressions": [_not_on(avoid_nodes)]}}
        )
    if node_affinity:
        affinity["nodeAffinity"] = node_affinity
    if spec.gpu.placement is Placement.PACK:
        affinity["podAffinity"] = {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": worker_selector(service)},
                    },
                }
            ]
        }
    if spec.gpu.placement is Placement.ISOLATION:
        # Required anti-affinity against every kubeinfer worker in every
        # namespace; the scheduler also applies an existing pod's required
        # anti-affinity to newcomers, so the node stays this worker's alone.
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": ANY_KUBEINFER_WORKER},
                    "namespaceSelector": {},
                }
            ]
        }
    return affinity


def _tolerations(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    # GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule (GKE does it
    # automatically); a GPU pod always tolerates that. A CPU worker does
    # not: the taint is there to keep pods that need no GPU off GPU nodes.
    tolerations = []
    if not spec.gpu.cpu_only:
        tolerations.append({"key": c.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    tolerations += [t.to_dict() for t in spec.gpu.tolerations]
    return tolerations


def _resources(spec: InferenceServiceSpec) -> dict[str, Any]:
    """Requests and limits; the GPU (exactly one) only when the spec wants one."""
    resources = spec.worker.resources
    requests = {"cpu": resources.cpu, "memory": resources.memory}
    limits = {"memory": resources.memory}
    if not spec.gpu.cpu_only:
        requests[spec.gpu.resource_name] = "1"
        limits[spec.gpu.resource_name] = "1"
    return {"requests": requests, "limits": limits}


def build_worker_pod(
    meta: ObjectMeta,
    spec: InferenceServiceSpec,
    *,
    revision: str,
    replica: int,
    images: Images,
    replaces: str | None = None,
    failures: int = 0,
    avoid_nodes: tuple[str, ...] = (),
    exclude_nodes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The Pod for replica ``replica`` of revision ``revision``.

    ``replaces`` names the failed pod this one replaces (it only changes the
    name); ``failures`` counts the failures of the replica so far (the
    operator's replacement backoff reads it back); ``avoid_nodes`` keeps the
    pod off nodes where it failed before, as a preference so that a small
    cluster can still place it; ``exclude_nodes`` is a hard rule, for nodes
    known to be lost (the scheduler would otherwise see them as free until
    the node controller taints them).
    """
    labels = component_labels(meta.name, c.COMPONENT_WORKER) | {
        c.LABEL_REVISION: revision,
        c.LABEL_REPLICA: str(replica),
    }
    name = worker_pod_name(meta.name, revision, replica, replaces)
    volumes, mounts = _volumes(spec)
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker_image(spec, images),
        "imagePullPolicy": "IfNotPresent",
        "command": ["kubeinfer-worker"],
        "args": _worker_args(spec),
        "ports": [
            {"name": "http", "containerPort": c.WORKER_HTTP_PORT, "protocol": "TCP"},
            {"name": "agent", "containerPort": c.WORKER_AGENT_PORT, "protocol": "TCP"},
        ],
        "env": _env(spec),
        "resources": _resources(spec),
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": "agent"},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 2,
            "failureThreshold": max(1, startup_budget_seconds(spec) // STARTUP_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "agent"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": "agent"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "volumeMounts": mounts,
        "securityContext": restricted_container_security(),
        "terminationMessagePath": c.DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The agent drains for drainSeconds, then stops the engine.
        "terminationGracePeriodSeconds": spec.worker.drain_seconds + 30,
        "securityContext": restricted_pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    node_selector = dict(spec.gpu.node_selector)
    if spec.gpu.product:
        node_selector[LABEL_GPU_PRODUCT] = spec.gpu.product
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    affinity = _affinity(spec, meta.name, avoid_nodes, exclude_nodes)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.gpu.placement is Placement.SPREAD:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": worker_selector(meta.name)},
            }
        ]
    annotations = scrape_annotations(c.WORKER_AGENT_PORT)
    if replaces:
        annotations[c.ANNOTATION_REPLACES] = replaces
    if failures:
        annotations[c.ANNOTATION_FAILURES] = str(failures)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": child_metadata(meta, name, labels, annotations),
        "spec": pod_spec,
    }
