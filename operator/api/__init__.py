"""The kubeinfer API (`InferenceService`, group kubeinfer.io, v1alpha1).

Importable without kopf or a Kubernetes client: the router and the worker
use these models too.
"""

from kubeinfer.operator.api.resource import (
    InferenceService,
    InvalidSpecError,
    ObjectMeta,
    parse_spec,
)
from kubeinfer.operator.api.routing import Backend, HealthCheck, RoutingTable
from kubeinfer.operator.api.spec import (
    AnalysisSpec,
    Dtype,
    Engine,
    EngineArgs,
    GPUSpec,
    InferenceServiceSpec,
    ModelSpec,
    Placement,
    RolloutSpec,
    RoutingSpec,
    SecretKeyRef,
    SimulatorSpec,
    Strategy,
    WorkerSpec,
)
from kubeinfer.operator.api.status import (
    Condition,
    InferenceServiceStatus,
    Phase,
    ReplicaStatus,
    RevisionRecord,
    RolloutPhase,
    RolloutStatus,
)

__all__ = [
    "AnalysisSpec",
    "Backend",
    "Condition",
    "Dtype",
    "Engine",
    "EngineArgs",
    "GPUSpec",
    "HealthCheck",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "InvalidSpecError",
    "ModelSpec",
    "ObjectMeta",
    "Phase",
    "Placement",
    "ReplicaStatus",
    "RevisionRecord",
    "RolloutPhase",
    "RolloutSpec",
    "RolloutStatus",
    "RoutingSpec",
    "RoutingTable",
    "SecretKeyRef",
    "SimulatorSpec",
    "Strategy",
    "WorkerSpec",
    "parse_spec",
]
