"""Names shared by the operator, the router, the worker and the local runtime.

Defined once here so that a label key or an image name can never drift
between the component that writes it and the one that reads it.
"""

from typing import Final

GROUP: Final = "kubeinfer.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceService"
PLURAL: Final = "inferenceservices"
SINGULAR: Final = "inferenceservice"
# `isvc` is KServe's short name; ours must not clash with it.
SHORT_NAMES: Final = ("infsvc",)

# Labels on everything the operator creates.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_SERVICE: Final = f"{GROUP}/service"
LABEL_REVISION: Final = f"{GROUP}/revision"
LABEL_REPLICA: Final = f"{GROUP}/replica"
COMPONENT_WORKER: Final = "worker"
COMPONENT_ROUTER: Final = "router"
MANAGED_BY: Final = "kubeinfer-operator"

# NVIDIA's device plugin: the extended resource and the taint GPU nodes
# commonly carry. GPU Feature Discovery's node labels, read for placement,
# the VRAM check and the inventory (and written by the local cluster).
GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
GFD_LABEL_PREFIX: Final = "nvidia.com/gpu"
LABEL_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY: Final = "nvidia.com/gpu.memory"  # MiB
LABEL_GPU_COUNT: Final = "nvidia.com/gpu.count"
LABEL_GPU_PRESENT: Final = "nvidia.com/gpu.present"
LABEL_GPU_COMPUTE_MAJOR: Final = "nvidia.com/gpu.compute.major"
LABEL_GPU_COMPUTE_MINOR: Final = "nvidia.com/gpu.compute.minor"

# Manual rollout control (see docs/rollouts.md).
ANNOTATION_ROLLOUT: Final = f"{GROUP}/rollout"
# On worker pods: how many failed pods of this replica came before it (the
# replacement backoff), the pod it replaces, and when its drain began.
ANNOTATION_FAILURES: Final = f"{GROUP}/failures"
ANNOTATION_REPLACES: Final = f"{GROUP}/replaces"
ANNOTATION_DRAINING: Final = f"{GROUP}/draining-since"

# Container images. The local runtime (tests/localcluster) recognises these
# repositories (any tag) and runs the matching console script for them.
IMAGE_REPOSITORY_WORKER: Final = "ghcr.io/kubeinfer/worker"
# The same agent on vLLM's CPU backend (worker-image/Dockerfile.cpu), for
# InferenceServices with gpu.count 0.
IMAGE_REPOSITORY_WORKER_CPU: Final = "ghcr.io/kubeinfer/worker-cpu"
IMAGE_REPOSITORY_ROUTER: Final = "ghcr.io/kubeinfer/router"
IMAGE_REPOSITORY_OPERATOR: Final = "ghcr.io/kubeinfer/operator"
DEFAULT_IMAGE_TAG: Final = "0.1.0"

# Ports.
WORKER_HTTP_PORT: Final = 8000  # vLLM's OpenAI-compatible server
WORKER_AGENT_PORT: Final = 8081  # kubeinfer agent: /ready /live /gpu /metrics
ROUTER_HTTP_PORT: Final = 8080

# Scraping (docs/operations.md): worker and router pods carry the
# prometheus.io annotations that annotation-based scrape configs read; the
# worker's agent port serves the agent's series and the engine's.
ANNOTATION_SCRAPE: Final = "prometheus.io/scrape"
ANNOTATION_SCRAPE_PORT: Final = "prometheus.io/port"
ANNOTATION_SCRAPE_PATH: Final = "prometheus.io/path"
METRICS_PATH: Final = "/metrics"
# Prometheus pods (kube-prometheus-stack and the prometheus chart label them
# so) may reach the workers' agent port through the workers' NetworkPolicy.
LABEL_PROMETHEUS_NAME: Final = "app.kubernetes.io/name"
PROMETHEUS_NAME: Final = "prometheus"

# Environment understood by all kubeinfer processes.
# In a real pod processes bind 0.0.0.0 (kubectl port-forward needs it). The
# local runtime runs every pod on the host network, so it sets this to the
# pod IP and our processes bind only there.
ENV_BIND_HOST: Final = "KUBEINFER_BIND_HOST"
# The operator's own pod (downward API): the namespace of its leader-election
# Lease, and the name its leader-election identity starts with.
ENV_POD_NAME: Final = "POD_NAME"
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"
# Where a container writes its one-line failure reason. Kubernetes reads
# /dev/termination-log; the local runtime points this at a per-pod file.
ENV_TERMINATION_LOG: Final = "KUBEINFER_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
# The router's API key (from the Secret in spec.routing); when set, clients
# must send `Authorization: Bearer <key>` to the OpenAI endpoints.
ENV_API_KEY: Final = "KUBEINFER_API_KEY"

# The worker's device (`kubeinfer-worker --device`): a GPU watched through
# NVML, or none (vLLM's CPU backend, gpu.count 0).
WORKER_DEVICE_GPU: Final = "gpu"
WORKER_DEVICE_CPU: Final = "cpu"
# vLLM's CPU backend sizes its KV cache from this variable (GiB), not from
# --gpu-memory-utilization; the operator derives it from the pod's memory.
ENV_VLLM_CPU_KVCACHE_SPACE: Final = "VLLM_CPU_KVCACHE_SPACE"
