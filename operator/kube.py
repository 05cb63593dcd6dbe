"""The operator's Kubernetes API edge: a few verbs over plain dicts.

Builders produce plain dicts, so this client speaks plain dicts too (the
generated model classes of kubernetes_asyncio would only be converted back
and forth). It is the only module besides kopf's own machinery that talks
to the API server.
"""

import json
import os
from collections.abc import Callable
from typing import Any

from kubeinfer.operator.api import constants as c
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

FIELD_MANAGER = "kubeinfer-operator"

# kind -> (API path prefix, plural) for everything the operator writes.
_PATHS = {
    "Pod": ("/api/v1", "pods"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Event": ("/api/v1", "events"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    c.KIND: (f"/apis/{c.API_VERSION}", c.PLURAL),
}


class NotFoundError(Exception):
    """The object does not exist."""


class ApiError(Exception):
    """The API server said no (403, 422, ...); the message is its own."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def api_error(error: ApiException) -> ApiError:
    """The API server's own message (a Status object) from an ApiException."""
    message, reason = str(error.reason or ""), ""
    try:
        body = json.loads(error.body or "{}")
        message = body.get("message") or message
        reason = body.get("reason") or ""
    except (TypeError, ValueError):
        pass
    return ApiError(int(error.status or 0), message, reason)


class ConflictError(Exception):
    """The object already exists (create) or changed meanwhile."""


def object_path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    prefix, plural = _PATHS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


async def load_config() -> client.Configuration:
    """In-cluster when running in a pod, else the kubeconfig (KUBECONFIG)."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=configuration)
    return configuration


class KubeClient:
    """Create, apply, patch, delete and read objects as dicts."""

    def __init__(self, api: client.ApiClient, fence: Callable[[], None] | None = None) -> None:
        self._api = api
        # Called before every write: leader election's fence (leader.py),
        # which ends a process that no longer holds the lease.
        self._fence = fence

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        fence: Callable[[], None] | None = None,
    ) -> "KubeClient":
        """In-cluster, or from the kubeconfig (``kubeconfig``, else
        KUBECONFIG, else ~/.kube/config) with ``context`` if given."""
        if kubeconfig is None and context is None:
            return cls(client.ApiClient(configuration=await load_config()), fence)
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        return cls(client.ApiClient(configuration=configuration), fence)

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Raises NotFoundError (404), ConflictError (409) or ApiException."""
        if self._fence is not None and method != "GET":
            self._fence()
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object", 202: "object"},
                _return_http_data_only=True,
                _preload_content=False,
            )
            raw = await result.read()
            # Without preloading, the client returns every answer, errors
            # included: the status must be checked here.
            if not 200 <= result.status <= 299:
                refused = ApiException(status=result.status, reason=result.reason)
                refused.body = raw
                raise refused
        except ApiException as error:
            if error.status == 404:
                raise NotFoundError(path) from error
            if error.status == 409:
                raise ConflictError(path) from error
            raise
        parsed: dict[str, Any] = json.loads(raw) if raw else {}
        return parsed

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Any API path; errors other than 404/409 come back as ApiError
        with the API server's message (which names a missing permission)."""
        try:
            return await self._call(method, path, body=body, content_type=content_type, query=query)
        except ApiException as error:
            raise api_error(error) from error

    async def get_text(self, path: str) -> str:
        """A GET whose answer is not a Kubernetes object (the pod proxy)."""
        try:
            result = await self._api.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
            )
            raw: bytes = await result.read()
        except ApiException as error:
            raise api_error(error) from error
        if not 200 <= result.status < 300:
            failed = ApiException(status=result.status, reason=result.reason)
            failed.body = raw
            raise api_error(failed)
        return raw.decode()

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", object_path(kind, namespace, name))

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Raises ConflictError when an object of that name exists."""
        meta = obj["metadata"]
        return await self._call("POST", object_path(obj["kind"], meta["namespace"]), body=obj)

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: we own the fields we set, nothing else."""
        meta = obj["metadata"]
        return await self._call(
            "PATCH",
            object_path(obj["kind"], meta["namespace"], meta["name"]),
            body=obj,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any]:
        return await self._call(
            "PATCH",
            object_path(kind, namespace, name, sub),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, kind: str, namespace: str, name: str, grace: int | None = None) -> None:
        """Deleting what is already gone is fine."""
        query = [("gracePeriodSeconds", str(grace))] if grace is not None else []
        try:
            await self._call("DELETE", object_path(kind, namespace, name), query=query)
        except NotFoundError:
            return
