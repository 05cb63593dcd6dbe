"""The `InferenceService` object as a whole (what `kubectl get -o yaml` shows)."""

from typing import Annotated, Any

from kubeinfer.operator.api.base import ApiModel
from kubeinfer.operator.api.constants import API_VERSION, KIND
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.api.status import InferenceServiceStatus
from pydantic import Field, ValidationError


class InvalidSpecError(ValueError):
    """The spec can never work; the message says why, field by field."""


class ObjectMeta(ApiModel):
    """The part of metadata the operator reads; the rest passes through."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InferenceService(ApiModel):
    """One model on N GPUs behind a router."""

    api_version: Annotated[str, Field(alias="apiVersion")] = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, with the field path the user wrote (camelCase)."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "spec"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def parse_spec(spec: dict[str, Any]) -> InferenceServiceSpec:
    """Validate a raw spec.

    Raises:
        InvalidSpecError: with every problem, in words a person understands.
    """
    try:
        return InferenceServiceSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidSpecError(format_validation_error(error)) from error


def parse_inference_service(body: dict[str, Any]) -> InferenceService:
    """Validate a whole InferenceService as the API server returns it.

    Raises:
        InvalidSpecError: with every problem, in words a person understands.
    """
    try:
        return InferenceService.model_validate(body)
    except ValidationError as error:
        raise InvalidSpecError(format_validation_error(error)) from error
