"""A container's environment, resolved against the API like kubelet does."""

from __future__ import annotations

import base64
from typing import Any

from kubeinfer.localcluster.runtime.kubeapi import ApiError, KubeApi
from kubeinfer.localcluster.runtime.podspec import (
    ConfigError,
    Container,
    Pod,
    expand_references,
    field_value,
)


class _Sources:
    """Secrets and ConfigMaps of one namespace, fetched once per container start."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    async def data(self, kind: str, name: str) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self._cache:
            plural = "secrets" if kind == "Secret" else "configmaps"
            try:
                obj = await self._api.get(f"/api/v1/namespaces/{self._namespace}/{plural}/{name}")
            except ApiError as error:
                if error.status != 404:
                    raise ConfigError(f"reading {kind} {name!r}: {error}") from error
                self._cache[key] = None
            else:
                raw = obj.get("data") or {}
                if kind == "Secret":
                    self._cache[key] = {k: base64.b64decode(v).decode() for k, v in raw.items()}
                else:
                    self._cache[key] = {**raw, **(obj.get("binaryData") or {})}
        return self._cache[key]

    async def key(self, kind: str, ref: dict[str, Any]) -> str | None:
        data = await self.data(kind, ref["name"])
        optional = bool(ref.get("optional", False))
        if data is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        if ref["key"] not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']!r}")
        return data[ref["key"]]


def _resource_value(container: Container, ref: dict[str, Any]) -> str:
    # Without cgroups there is no node allocatable to fall back to: unset means "0".
    section, _, name = ref["resource"].partition(".")
    value = (container.get("resources") or {}).get(section, {}).get(name)
    return str(value) if value is not None else "0"


async def container_env(
    api: KubeApi, pod: Pod, container: Container, pod_ip: str, host_ip: str
) -> dict[str, str]:
    """The env a pod declares for one container (envFrom, then env, $(VAR) expanded).

    Raises ConfigError for a missing Secret/ConfigMap or key (kubelet's
    CreateContainerConfigError).
    """
    sources = _Sources(api, pod["metadata"]["namespace"])
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(field)
            if not ref:
                continue
            data = await sources.data(kind, ref["name"])
            if data is None and not ref.get("optional", False):
                raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        value_from = var.get("valueFrom")
        if not value_from:
            env[var["name"]] = expand_references(var.get("value", ""), env)
            continue
        value: str | None
        if "fieldRef" in value_from:
            value = field_value(pod, value_from["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in value_from:
            value = _resource_value(container, value_from["resourceFieldRef"])
        elif "secretKeyRef" in value_from:
            value = await sources.key("Secret", value_from["secretKeyRef"])
        elif "configMapKeyRef" in value_from:
            value = await sources.key("ConfigMap", value_from["configMapKeyRef"])
        else:
            raise ConfigError(f"unsupported valueFrom for {var['name']!r}")
        if value is not None:
            env[var["name"]] = value
    return env
