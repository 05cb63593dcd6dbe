"""The revision of an InferenceService: a hash of what its worker pods run.

A new revision means new worker pods (and a canary rollout); anything else
(replicas, routing, rollout settings) is applied in place. So the hash
covers exactly the fields that end up in a worker pod: the model, the GPU
selection and placement, and the worker settings including the effective
image (a new default image from an operator upgrade rolls out like any
other change).
"""

import hashlib
import json
from typing import Any

from kubeinfer.operator.api.spec import InferenceServiceSpec

REVISIONED_FIELDS = ("model", "gpu", "worker")
REVISION_LENGTH = 10


def revision_template(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The revisioned part of the spec, as stored in the revision history
    (``kubeinfer rollout undo`` writes it back)."""
    full = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {field: full[field] for field in REVISIONED_FIELDS}


def compute_revision(spec: InferenceServiceSpec, worker_image: str) -> str:
    """A short, stable hash over the revisioned fields and the image.

    Defaults are applied before hashing, so writing a default value
    explicitly does not roll the pods.
    """
    payload = {"template": revision_template(spec), "image": spec.worker.image or worker_image}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:REVISION_LENGTH]
