"""The routing table: what the operator publishes and every router watches.

It lives in one ConfigMap per InferenceService (``<name>-routes``, key
``routes.json``), and the same document can be given to a router as a file
(``kubeinfer-router --config routes.yaml``). Worker Services and
EndpointSlices are deliberately not used: the operator knows which pods are
ready, which are draining and which revision each one runs, and the router
needs all three.
"""

from typing import Annotated, Final, Self

from kubeinfer.operator.api.base import ApiModel
from kubeinfer.operator.api.spec import Strategy
from pydantic import Field, model_validator

ROUTES_CONFIGMAP_KEY: Final = "routes.json"


def routes_configmap_name(service: str) -> str:
    return f"{service}-routes"


class HealthCheck(ApiModel):
    """Active health checking of backends by the router."""

    interval_seconds: Annotated[float, Field(gt=0, le=300)] = 1.0
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 1


class Backend(ApiModel):
    """One worker: a single GPU running one engine."""

    name: Annotated[str, Field(min_length=1, description="Pod name (stable id of the backend).")]
    url: Annotated[
        str,
        Field(
            pattern=r"^https?://", description="Base URL of the engine, e.g. http://10.0.0.5:8000"
        ),
    ]
    revision: Annotated[str, Field(min_length=1, description="Revision the worker runs.")]
    health_url: Annotated[
        str | None,
        Field(
            pattern=r"^https?://",
            description="Active health check URL; url + /health when absent.",
        ),
    ] = None
    gpu_url: Annotated[
        str | None,
        Field(
            pattern=r"^https?://",
            description="The worker agent's GET /gpu (NVML snapshot); none for CPU workers.",
        ),
    ] = None
    weight: Annotated[
        int, Field(ge=0, le=1000, description="Relative weight within its revision (weighted).")
    ] = 1
    draining: Annotated[bool, Field(description="Finishing in-flight requests: no new ones.")] = (
        False
    )
    max_concurrency: Annotated[
        int | None, Field(ge=1, le=100_000, description="In-flight limit; unlimited when absent.")
    ] = None


class RoutingTable(ApiModel):
    """Everything a router needs; reloaded live, without dropping requests."""

    service: Annotated[str, Field(min_length=1, description="InferenceService name.")]
    model: Annotated[str, Field(min_length=1, description="Served model name.")]
    generation: Annotated[
        int, Field(ge=0, description="Increases with every change (for logs and metrics).")
    ] = 0
    strategy: Strategy = Strategy.LEAST_LOADED
    backends: list[Backend] = Field(default_factory=list)
    revision_weights: Annotated[
        dict[str, int],
        Field(
            description=(
                "Traffic percent per revision. Revisions not listed get no traffic "
                "unless the map is empty, in which case all revisions share by capacity."
            )
        ),
    ] = Field(default_factory=dict)
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0
    queue_size: Annotated[int, Field(ge=0)] = 256
    queue_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    hold_seconds: Annotated[
        float,
        Field(
            ge=0,
            description=(
                "While no worker can take a request (none exist: scaled to zero), hold it in "
                "the queue this long for one to become ready; 0 answers 503 at once."
            ),
        ),
    ] = 0.0
    prefix_length: Annotated[int, Field(ge=1)] = 256
    load_factor: Annotated[float, Field(ge=1.0)] = 2.0
    stall_timeout_seconds: Annotated[
        float, Field(gt=0, description="In-flight but no bytes for this long: out of rotation.")
    ] = 30.0
    health_check: HealthCheck = Field(default_factory=HealthCheck)

    @model_validator(mode="after")
    def _weights_are_percentages(self) -> Self:
        if any(not 0 <= w <= 100 for w in self.revision_weights.values()):
            raise ValueError("revisionWeights must be between 0 and 100")
        if self.revision_weights and sum(self.revision_weights.values()) != 100:
            raise ValueError(
                f"revisionWeights must add up to 100, not {sum(self.revision_weights.values())}"
            )
        names = [b.name for b in self.backends]
        if len(names) != len(set(names)):
            raise ValueError("backend names must be unique")
        return self
