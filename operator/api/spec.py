"""`InferenceService.spec`: what the user asks for.

Every field has a description: the CRD (``kubeinfer crds``) and the field
reference in docs/api.md are generated from these models. Rules that a
single field can't express are CEL rules (``x-kubernetes-validations``)
attached with ``json_schema_extra`` and checked again by pydantic, so the
operator and the API server reject the same objects with the same message.
"""

from enum import StrEnum
from typing import Annotated, Any, Self

from kubeinfer.operator.api import constants, engineflags
from kubeinfer.operator.api.base import ApiModel
from pydantic import Field, model_validator

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# vLLM accepts any string as --served-model-name; keep what is safe in
# HTTP paths, labels of metrics and OpenAI clients (org/name is common).
SERVED_MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$"


class Strategy(StrEnum):
    """How the router picks a worker within one revision."""

    ROUND_ROBIN = "round-robin"
    LEAST_LOADED = "least-loaded"
    WEIGHTED = "weighted"
    PREFIX_AFFINITY = "prefix-affinity"
    PREFIX_SCORE = "prefix-score"  # the ring home that would start the prompt soonest


class Placement(StrEnum):
    """How worker pods are spread over nodes."""

    SPREAD = "spread"  # one failing node takes out as few replicas as possible
    PACK = "pack"  # fill nodes, leave whole nodes free for others
    LARGEST_FIRST = "largest-first"  # prefer the GPUs with the most memory (needs a GPU)
    # A whole node per worker: no other kubeinfer worker (of any service)
    # on the same node, for noisy-neighbour-free benchmarks and tenants.
    ISOLATION = "isolation"


class Engine(StrEnum):
    """What runs in a worker pod."""

    VLLM = "vllm"  # vLLM's own OpenAI-compatible server
    SIMULATED = "simulated"  # kubeinfer's simulated engine: no GPU, same HTTP surface


class Dtype(StrEnum):
    AUTO = "auto"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


def cel(rule: str, message: str) -> dict[str, Any]:
    """One CEL validation rule as the CRD schema spells it."""
    return {"rule": rule, "message": message}


class SecretKeyRef(ApiModel):
    """A key of a Secret in the InferenceService's namespace."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253, description="Secret name.")]
    key: Annotated[
        str,
        Field(min_length=1, max_length=253, description="Key in the Secret."),
    ] = "token"


class EngineArgs(ApiModel):
    """Arguments for the engine; mapped to vLLM's flags by the worker."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": engineflags.extra_args_cel()}
    }

    max_model_len: Annotated[
        int | None,
        Field(ge=16, le=10_000_000, description="Context length (--max-model-len)."),
    ] = None
    dtype: Annotated[Dtype, Field(description="Weights dtype (--dtype).")] = Dtype.AUTO
    gpu_memory_utilization: Annotated[
        float,
        Field(
            gt=0.0,
            le=1.0,
            description=(
                "Fraction of GPU memory vLLM may use (--gpu-memory-utilization); "
                "not used on CPU (gpu.count 0)."
            ),
        ),
    ] = 0.9
    max_num_seqs: Annotated[
        int | None,
        Field(ge=1, le=4096, description="Sequences per batch (--max-num-seqs)."),
    ] = None
    extra_args: Annotated[
        list[Annotated[str, Field(max_length=1024)]],
        Field(
            max_length=64,
            description=(
                "More vLLM flags, passed through verbatim; not those the worker sets "
                "(--port, --served-model-name, ...), secrets or multi-GPU parallelism."
            ),
        ),
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_reserved_flags(self) -> Self:
        problem = engineflags.reserved_flag_problem(self.extra_args)
        if problem is not None:
            raise ValueError(problem)
        return self


class ModelSpec(ApiModel):
    """The model to serve."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": [engineflags.source_scheme_cel()]}
    }

    name: Annotated[
        str,
        Field(
            pattern=SERVED_MODEL_NAME,
            description="Served model name: the `model` clients send (--served-model-name).",
        ),
    ]
    source: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1024,
            description=(
                "Where the weights come from: a Hugging Face id (org/name), "
                "pvc://CLAIM/path, s3://bucket/path or an absolute local path."
            ),
        ),
    ]
    revision: Annotated[
        str | None,
        Field(max_length=128, description="Hub revision (branch, tag or commit)."),
    ] = None
    engine_args: Annotated[EngineArgs, Field(description="Engine arguments (vLLM flags).")] = Field(
        default_factory=EngineArgs
    )
    vram_gi_b: Annotated[
        float | None,
        Field(
            alias="vramGiB",
            gt=0,
            le=4096,
            description=(
                "Memory the model needs, in GiB (GPU memory; RAM on CPU); estimated when absent."
            ),
        ),
    ] = None
    parameters_billions: Annotated[
        float | None,
        Field(
            gt=0,
            le=10_000,
            description="Parameter count in billions, used to estimate vramGiB when absent.",
        ),
    ] = None
    secret_ref: Annotated[
        SecretKeyRef | None,
        Field(description="Secret holding a hub token (HF_TOKEN); never put a token in the spec."),
    ] = None

    @model_validator(mode="after")
    def _source_scheme_is_known(self) -> Self:
        problem = engineflags.source_scheme_problem(self.source)
        if problem is not None:
            raise ValueError(problem)
        return self


class Toleration(ApiModel):
    """A Kubernetes toleration (GPU nodes are often tainted)."""

    key: Annotated[str | None, Field(max_length=317, description="Taint key.")] = None
    operator: Annotated[str, Field(pattern=r"^(Exists|Equal)$", description="Exists or Equal.")] = (
        "Equal"
    )
    value: Annotated[str | None, Field(max_length=63, description="Taint value.")] = None
    effect: Annotated[
        str | None,
        Field(
            pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$",
            description="Taint effect; all effects when absent.",
        ),
    ] = None


# A label key: an optional DNS-subdomain prefix and a name.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


class NodeSelectorRequirement(ApiModel):
    """One node label expression (Kubernetes' NodeSelectorRequirement)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.operator in ['Exists', 'DoesNotExist'] ? "
                    "!has(self.values) || size(self.values) == 0 : "
                    "has(self.values) && size(self.values) > 0",
                    "values must be empty for Exists and DoesNotExist and given otherwise",
                ),
                cel(
                    "!(self.operator in ['Gt', 'Lt']) || "
                    "(size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
                    "Gt and Lt take exactly one integer value",
                ),
            ]
        }
    }

    key: Annotated[str, Field(max_length=317, pattern=LABEL_KEY, description="Node label key.")]
    operator: Annotated[
        str,
        Field(
            pattern=r"^(In|NotIn|Exists|DoesNotExist|Gt|Lt)$",
            description="In, NotIn, Exists, DoesNotExist, Gt or Lt.",
        ),
    ]
    values: Annotated[
        list[Annotated[str, Field(max_length=63)]],
        Field(max_length=64, description="Label values (one integer for Gt and Lt)."),
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> Self:
        if self.operator in ("Exists", "DoesNotExist"):
            if self.values:
                raise ValueError(
                    "values must be empty for Exists and DoesNotExist and given otherwise"
                )
        elif not self.values:
            raise ValueError("values must be empty for Exists and DoesNotExist and given otherwise")
        if self.operator in ("Gt", "Lt") and (
            len(self.values) != 1 or not self.values[0].lstrip("-").isdigit()
        ):
            raise ValueError("Gt and Lt take exactly one integer value")
        return self


class NodeSelectorTerm(ApiModel):
    """Expressions that must all hold (Kubernetes' NodeSelectorTerm)."""

    match_expressions: Annotated[
        list[NodeSelectorRequirement],
        Field(min_length=1, max_length=32, description="All must match."),
    ]


class NodeSelector(ApiModel):
    """Terms of which at least one must hold (Kubernetes' NodeSelector)."""

    node_selector_terms: Annotated[
        list[NodeSelectorTerm],
        Field(min_length=1, max_length=16, description="Any one must match."),
    ]


class PreferredSchedulingTerm(ApiModel):
    """A weighted preference (Kubernetes' PreferredSchedulingTerm)."""

    weight: Annotated[int, Field(ge=1, le=100, description="1-100.")]
    preference: Annotated[NodeSelectorTerm, Field(description="The nodes preferred.")]


class NodeAffinity(ApiModel):
    """Node affinity of the worker pods, in Kubernetes' own shape; combined
    with the rules kubeinfer adds (placement, lost nodes, minMemoryMiB)."""

    required_during_scheduling_ignored_during_execution: Annotated[
        NodeSelector | None, Field(description="Nodes a worker may run on.")
    ] = None
    preferred_during_scheduling_ignored_during_execution: Annotated[
        list[PreferredSchedulingTerm],
        Field(max_length=16, description="Nodes a worker prefers."),
    ] = Field(default_factory=list)


# With no GPU there is nothing for these to select; say so rather than
# silently ignoring a setting the user believes is in force.
NO_GPU_SELECTORS_MESSAGE = (
    "gpu.product and gpu.minMemoryMiB select GPUs: leave them out when gpu.count is 0"
)
NO_GPU_LARGEST_FIRST_MESSAGE = (
    "gpu.placement largest-first ranks nodes by GPU memory: use spread or pack when gpu.count is 0"
)


class GPUSpec(ApiModel):
    """Which GPUs the workers get: one per worker pod, or none (count 0)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.count) || self.count != 0 || "
                    "(!has(self.product) && !has(self.minMemoryMiB))",
                    NO_GPU_SELECTORS_MESSAGE,
                ),
                cel(
                    "!has(self.count) || self.count != 0 || "
                    "!has(self.placement) || self.placement != 'largest-first'",
                    NO_GPU_LARGEST_FIRST_MESSAGE,
                ),
            ]
        }
    }

    count: Annotated[
        int,
        Field(
            ge=0,
            le=1,
            description=(
                "GPUs per worker pod: 1 (default), or 0 to run vLLM's CPU backend with no GPU."
            ),
        ),
    ] = 1
    resource_name: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
            description=(
                "Extended resource of one GPU (nvidia.com/gpu, or a MIG profile); "
                "ignored when count is 0."
            ),
        ),
    ] = constants.GPU_RESOURCE
    product: Annotated[
        str | None,
        Field(
            max_length=63,
            description="Required GPU model, the nvidia.com/gpu.product node label.",
        ),
    ] = None
    min_memory_mi_b: Annotated[
        int | None,
        Field(
            alias="minMemoryMiB",
            ge=1,
            description="Only nodes whose nvidia.com/gpu.memory label is at least this.",
        ),
    ] = None
    placement: Annotated[
        Placement,
        Field(
            description=(
                "spread (default, for HA), pack, largest-first (needs a GPU) or isolation "
                "(a whole node per worker, no other kubeinfer worker beside it)."
            )
        ),
    ] = Placement.SPREAD
    node_selector: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]],
        Field(
            max_length=32,
            description="Node labels the worker pods require (manual pinning, pod nodeSelector).",
        ),
    ] = Field(default_factory=dict)
    node_affinity: Annotated[
        NodeAffinity | None,
        Field(description="Node affinity of the worker pods (manual pinning), Kubernetes' shape."),
    ] = None
    tolerations: Annotated[
        list[Toleration],
        Field(
            max_length=32,
            description=(
                "Tolerations for node taints; GPU workers always tolerate nvidia.com/gpu."
            ),
        ),
    ] = Field(default_factory=list)

    @property
    def cpu_only(self) -> bool:
        """No GPU: the worker runs vLLM's CPU backend."""
        return self.count == 0

    @model_validator(mode="after")
    def _no_gpu_selectors_without_a_gpu(self) -> Self:
        if self.cpu_only and (self.product is not None or self.min_memory_mi_b is not None):
            raise ValueError(NO_GPU_SELECTORS_MESSAGE)
        if self.cpu_only and self.placement is Placement.LARGEST_FIRST:
            raise ValueError(NO_GPU_LARGEST_FIRST_MESSAGE)
        return self


class ResourceSpec(ApiModel):
    """CPU and memory for a container (requests = limits for memory)."""

    cpu: Annotated[
        str, Field(pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request, e.g. 4 or 500m.")
    ] = "1"
    memory: Annotated[
        str,
        Field(
            pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$",
            description="Memory request and limit, e.g. 32Gi.",
        ),
    ] = "4Gi"


class RoutingSpec(ApiModel):
    """How the router balances requests."""

    strategy: Annotated[
        Strategy,
        Field(description="round-robin, least-loaded, weighted, prefix-affinity or prefix-score."),
    ] = Strategy.LEAST_LOADED
    retries: Annotated[
        int,
        Field(ge=0, le=5, description="Retries on another worker before a byte was sent back."),
    ] = 2
    request_timeout_seconds: Annotated[
        float, Field(gt=0, le=86_400, description="Per-request timeout.")
    ] = 600.0
    connect_timeout_seconds: Annotated[
        float, Field(gt=0, le=60, description="Timeout to connect to a worker.")
    ] = 2.0
    queue_size: Annotated[
        int | None,
        Field(
            ge=0,
            le=100_000,
            description=(
                "Requests that may wait when all workers are full; when absent 256, or 1024 "
                "with autoscaling (a spike waits there while new workers start)."
            ),
        ),
    ] = None
    queue_timeout_seconds: Annotated[
        float, Field(gt=0, le=3_600, description="Longest wait in the queue before 429.")
    ] = 30.0
    max_concurrency_per_worker: Annotated[
        int | None,
        Field(
            ge=1,
            le=4096,
            description="In-flight requests per worker; engineArgs.maxNumSeqs when absent.",
        ),
    ] = None
    prefix_length: Annotated[
        int,
        Field(
            ge=1, le=65_536, description="prefix-affinity, prefix-score: characters of the key."
        ),
    ] = 256
    load_factor: Annotated[
        float,
        Field(
            ge=1.0,
            le=10.0,
            description=(
                "prefix-affinity, prefix-score: a worker takes at most this times the mean load."
            ),
        ),
    ] = 2.0
    router_replicas: Annotated[int, Field(ge=0, le=64, description="Router pods.")] = 2
    router_processes: Annotated[
        int, Field(ge=1, le=64, description="Router processes per pod (SO_REUSEPORT).")
    ] = 1
    router_resources: Annotated[
        ResourceSpec, Field(description="CPU and memory of each router pod.")
    ] = Field(default_factory=lambda: ResourceSpec(cpu="1", memory="512Mi"))
    api_key_secret_ref: Annotated[
        SecretKeyRef | None,
        Field(description="Secret with the API key clients must send (Authorization: Bearer)."),
    ] = None
    hold_timeout_seconds: Annotated[
        int | None,
        Field(
            ge=0,
            le=86_400,
            description=(
                "How long a router holds a request while no worker can take it (scaled to "
                "zero, or all restarting), then 429 with Retry-After; 0 answers 503 at once. "
                "Absent: with autoscaling, the worker's load timeout, else 10 s (a worker's "
                "restart); at most requestTimeoutSeconds. Raise it when KEDA or an HPA "
                "scales from zero."
            ),
        ),
    ] = None


class AnalysisSpec(ApiModel):
    """When a canary step passes: canary compared with stable, per step."""

    max_error_rate: Annotated[
        float, Field(ge=0, le=1, description="Highest canary error rate (0.01 = 1%).")
    ] = 0.01
    max_latency_ratio: Annotated[
        float, Field(ge=1, le=100, description="Highest canary p99 latency / stable p99.")
    ] = 1.5
    max_ttft_ratio: Annotated[
        float, Field(ge=1, le=100, description="Highest canary p99 TTFT / stable p99 TTFT.")
    ] = 1.5
    min_requests: Annotated[
        int, Field(ge=0, le=1_000_000, description="Canary requests needed before judging.")
    ] = 20


class RolloutSpec(ApiModel):
    """How a new revision replaces the stable one."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.steps) || self.steps.all(s, s >= 1 && s <= 100)",
                    "rollout.steps must be between 1 and 100",
                ),
                cel(
                    "!has(self.steps) || self.steps.isSorted() && "
                    "self.steps.all(s, self.steps.filter(t, t == s).size() == 1)",
                    "rollout.steps must be strictly ascending",
                ),
                cel(
                    "!has(self.steps) || self.steps.size() == 0 || "
                    "self.steps[self.steps.size() - 1] == 100",
                    "rollout.steps must end with 100",
                ),
            ]
        }
    }

    steps: Annotated[
        list[int],
        Field(
            min_length=1,
            max_length=20,
            description="Canary traffic weights in percent, ascending, ending with 100.",
        ),
    ] = [10, 25, 50, 100]
    step_interval_seconds: Annotated[
        int, Field(ge=0, le=86_400, description="Time at each step before it is judged.")
    ] = 60
    max_surge: Annotated[
        int,
        Field(
            ge=0,
            le=1024,
            description=(
                "Extra worker pods (so GPUs) allowed during a rollout; "
                "0 replaces pods one at a time."
            ),
        ),
    ] = 1
    analysis: Annotated[AnalysisSpec, Field(description="Thresholds for judging the canary.")] = (
        Field(default_factory=AnalysisSpec)
    )
    auto_rollback: Annotated[
        bool, Field(description="Roll back on its own when the canary fails analysis.")
    ] = True

    @model_validator(mode="after")
    def _steps_ascend_to_100(self) -> Self:
        if any(not 1 <= s <= 100 for s in self.steps):
            raise ValueError("rollout.steps must be between 1 and 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("rollout.steps must be strictly ascending")
        if self.steps[-1] != 100:
            raise ValueError("rollout.steps must end with 100")
        return self


class SimulatorSpec(ApiModel):
    """Service-time model and faults of the simulated engine (engine: simulated)."""

    ttft_ms: Annotated[float, Field(ge=0, le=600_000, description="Base time to first token.")] = (
        20.0
    )
    prefill_us_per_token: Annotated[
        float, Field(ge=0, le=1_000_000, description="Added prefill time per prompt token.")
    ] = 0.0
    tpot_ms: Annotated[float, Field(ge=0, le=60_000, description="Time per output token.")] = 5.0
    max_num_seqs: Annotated[
        int, Field(ge=1, le=4096, description="Batch slots; more requests wait.")
    ] = 64
    tpot_us_per_running_seq: Annotated[
        float,
        Field(
            ge=0,
            le=1_000_000,
            description="Added time per output token for each running sequence (batch cost).",
        ),
    ] = 0.0
    prefill_serial: Annotated[
        bool,
        Field(
            description=(
                "Prefills run one at a time, like a compute-bound GPU: uncached prompt "
                "tokens of concurrent requests queue behind each other."
            )
        ),
    ] = False
    kv_cache_blocks: Annotated[
        int,
        Field(
            ge=0,
            le=10_000_000,
            description=(
                "KV-cache size in blocks with prefix caching (hits skip prefill); "
                "0 turns the cache model off."
            ),
        ),
    ] = 0
    kv_block_size: Annotated[
        int, Field(ge=1, le=1024, description="Tokens per KV-cache block (vLLM's block_size).")
    ] = 16
    load_seconds: Annotated[
        float, Field(ge=0, le=3_600, description="Simulated model load time.")
    ] = 0.0
    error_rate: Annotated[
        float, Field(ge=0, le=1, description="Fraction of requests answered with 500.")
    ] = 0.0
    added_latency_ms: Annotated[
        float, Field(ge=0, le=600_000, description="Latency added before every answer.")
    ] = 0.0
    seed: Annotated[int, Field(ge=0, description="Seed for deterministic output.")] = 0
    crash_after_requests: Annotated[
        int | None, Field(ge=1, description="Exit after this many requests.")
    ] = None
    gpu_fault_after_requests: Annotated[
        int | None,
        Field(ge=1, description="Report a fatal GPU fault (Xid 79) after this many requests."),
    ] = None


class WorkerSpec(ApiModel):
    """The worker pods (one GPU each, or none with gpu.count 0)."""

    engine: Annotated[Engine, Field(description="vllm (default) or simulated (no GPU needed).")] = (
        Engine.VLLM
    )
    image: Annotated[
        str | None,
        Field(
            max_length=512,
            description=(
                "Worker image; kubeinfer's vLLM image (its CPU variant with gpu.count 0) "
                "when absent."
            ),
        ),
    ] = None
    resources: Annotated[
        ResourceSpec, Field(description="CPU and memory of each worker pod, besides its GPU.")
    ] = Field(default_factory=lambda: ResourceSpec(cpu="4", memory="32Gi"))
    simulator: Annotated[
        SimulatorSpec, Field(description="Simulated engine settings (engine: simulated).")
    ] = Field(default_factory=SimulatorSpec)
    drain_seconds: Annotated[
        int,
        Field(ge=0, le=3_600, description="How long in-flight requests may finish on shutdown."),
    ] = 30
    load_timeout_seconds: Annotated[
        int | None,
        Field(
            ge=30,
            le=86_400,
            description="Longest model load before the pod restarts; grows with size if absent.",
        ),
    ] = None


MIN_OVER_MAX_MESSAGE = "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
ZERO_NEEDS_IDLE_MESSAGE = (
    "autoscaling.minReplicas 0 needs autoscaling.scaleToZeroAfterSeconds "
    "(how long without requests before the last GPU is released)"
)
IDLE_NEEDS_ZERO_MESSAGE = (
    "autoscaling.scaleToZeroAfterSeconds only applies with autoscaling.minReplicas 0"
)
SURGE_OVER_MAX_MESSAGE = "rollout.maxSurge must not exceed autoscaling.maxReplicas"


class AutoscalingSpec(ApiModel):
    """Follow the load: the operator sets `replicas` between minReplicas and maxReplicas.

    Signals come from the routers (requests in flight and waiting, TTFT);
    the recommendation for each signal is computed and the largest wins,
    then stabilisation windows and step limits apply (like the HPA's
    ``behavior``). See docs/autoscaling.md.
    """

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    MIN_OVER_MAX_MESSAGE,
                ),
                cel(
                    "!has(self.minReplicas) || self.minReplicas != 0 || "
                    "has(self.scaleToZeroAfterSeconds)",
                    ZERO_NEEDS_IDLE_MESSAGE,
                ),
                cel(
                    "!has(self.scaleToZeroAfterSeconds) || "
                    "(has(self.minReplicas) && self.minReplicas == 0)",
                    IDLE_NEEDS_ZERO_MESSAGE,
                ),
            ]
        }
    }

    min_replicas: Annotated[
        int,
        Field(
            ge=0,
            le=1024,
            description="Fewest worker pods; 0 releases every GPU after scaleToZeroAfterSeconds.",
        ),
    ] = 1
    max_replicas: Annotated[
        int,
        Field(
            ge=1,
            le=1024,
            description=(
                "Most worker pods: the GPU budget (a rollout may add rollout.maxSurge on top)."
            ),
        ),
    ]
    target_in_flight_per_replica: Annotated[
        int,
        Field(
            ge=1,
            le=100_000,
            description=(
                "Requests in flight plus waiting in the routers, per worker "
                "(replicas = ceil(total / target))."
            ),
        ),
    ] = 32
    target_queue_per_replica: Annotated[
        int | None,
        Field(
            ge=1,
            le=100_000,
            description=(
                "Requests waiting in the routers' queues: one more worker for every this many "
                "(off when absent)."
            ),
        ),
    ] = None
    ttft_p90_objective_ms: Annotated[
        float | None,
        Field(
            gt=0,
            le=600_000,
            description=(
                "Time-to-first-token p90 objective: above it the operator adds workers in "
                "proportion and never removes any (off when absent)."
            ),
        ),
    ] = None
    interval_seconds: Annotated[
        int, Field(ge=1, le=300, description="How often the routers' signals are read.")
    ] = 3
    scale_up_stabilization_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=3_600,
            description="A higher recommendation must hold this long before GPUs are added.",
        ),
    ] = 9
    scale_down_stabilization_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=86_400,
            description="A lower recommendation must hold this long before GPUs are removed.",
        ),
    ] = 300
    max_step_up: Annotated[
        int, Field(ge=1, le=1024, description="Most worker pods added by one decision.")
    ] = 4
    max_step_down: Annotated[
        int, Field(ge=1, le=1024, description="Most worker pods removed by one decision.")
    ] = 1
    scale_to_zero_after_seconds: Annotated[
        int | None,
        Field(
            ge=1,
            le=604_800,
            description=(
                "With minReplicas 0: time without any request before the last worker goes."
            ),
        ),
    ] = None

    @model_validator(mode="after")
    def _sensible_bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(MIN_OVER_MAX_MESSAGE)
        if self.min_replicas == 0 and self.scale_to_zero_after_seconds is None:
            raise ValueError(ZERO_NEEDS_IDLE_MESSAGE)
        if self.min_replicas != 0 and self.scale_to_zero_after_seconds is not None:
            raise ValueError(IDLE_NEEDS_ZERO_MESSAGE)
        return self


class InferenceServiceSpec(ApiModel):
    """What the user asks for: a model on `replicas` worker pods, behind a router."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                # With autoscaling the operator moves replicas, down to 0:
                # the surge is bounded by the GPU budget instead.
                cel(
                    "has(self.autoscaling) || !has(self.rollout) || "
                    "!has(self.rollout.maxSurge) || !has(self.replicas) || "
                    "self.replicas == 0 || self.rollout.maxSurge <= self.replicas",
                    "rollout.maxSurge must not exceed replicas",
                ),
                cel(
                    "!has(self.autoscaling) || !has(self.rollout) || "
                    "!has(self.rollout.maxSurge) || "
                    "self.rollout.maxSurge <= self.autoscaling.maxReplicas",
                    SURGE_OVER_MAX_MESSAGE,
                ),
            ]
        }
    }

    model: Annotated[ModelSpec, Field(description="The model to serve.")]
    replicas: Annotated[
        int,
        Field(
            ge=0,
            le=1024,
            description=(
                "Worker pods, one GPU each unless gpu.count is 0 (0 pods allowed); "
                "set by the operator when autoscaling is on."
            ),
        ),
    ] = 1
    gpu: Annotated[
        GPUSpec, Field(description="GPUs per worker pod, which GPUs, and how to place pods.")
    ] = Field(default_factory=GPUSpec)
    routing: Annotated[RoutingSpec, Field(description="Load balancing.")] = Field(
        default_factory=RoutingSpec
    )
    rollout: Annotated[RolloutSpec, Field(description="Canary rollout of new revisions.")] = Field(
        default_factory=RolloutSpec
    )
    worker: Annotated[WorkerSpec, Field(description="The worker pods.")] = Field(
        default_factory=WorkerSpec
    )
    autoscaling: Annotated[
        AutoscalingSpec | None,
        Field(
            description=(
                "Scale on load between minReplicas and maxReplicas (off when absent); "
                "the operator then owns replicas (see docs/autoscaling.md)."
            )
        ),
    ] = None

    @model_validator(mode="after")
    def _surge_within_replicas(self) -> Self:
        if self.autoscaling is not None:
            if self.rollout.max_surge > self.autoscaling.max_replicas:
                raise ValueError(SURGE_OVER_MAX_MESSAGE)
        elif self.replicas and self.rollout.max_surge > self.replicas:
            raise ValueError("rollout.maxSurge must not exceed replicas")
        return self
