"""Pure helpers: which pods are ours, their commands, env and field values.

Everything here works on plain dicts (pods as the API returns them) and
is tested by tables of cases without a cluster.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeinfer.localcluster.kwok_stages import RUNTIME_IMAGE_PATTERN
from kubeinfer.operator.api.constants import (
    IMAGE_REPOSITORY_OPERATOR,
    IMAGE_REPOSITORY_ROUTER,
    IMAGE_REPOSITORY_WORKER,
    IMAGE_REPOSITORY_WORKER_CPU,
)

Pod = dict[str, Any]
Container = dict[str, Any]

# What an image of ours runs when the pod gives no command (the image's entrypoint).
ENTRYPOINTS: Mapping[str, str] = {
    IMAGE_REPOSITORY_WORKER: "kubeinfer-worker",
    # The CPU variant runs the same agent; only vLLM's build differs.
    IMAGE_REPOSITORY_WORKER_CPU: "kubeinfer-worker",
    IMAGE_REPOSITORY_ROUTER: "kubeinfer-router",
    IMAGE_REPOSITORY_OPERATOR: "kubeinfer-operator",
}

_IMAGE_RE = re.compile(RUNTIME_IMAGE_PATTERN)


class ConfigError(Exception):
    """The pod's spec cannot become a process (kubelet's CreateContainerConfigError)."""


def image_repository(image: str) -> str | None:
    """The repository of one of our images, or None for any other image."""
    match = _IMAGE_RE.match(image)
    return match.group(1) if match else None


def is_runtime_pod(pod: Pod) -> bool:
    """True when any (init) container runs one of our images: the runtime owns the pod."""
    spec = pod.get("spec", {})
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return any(image_repository(c.get("image", "")) for c in containers)


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names expand, $$ escapes, others stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            name = text[i + 2 : end] if end != -1 else None
            if name is not None and name in env:
                out.append(env[name])
                i = end + 1
            else:
                out.append(text[i : end + 1] if end != -1 else text[i:])
                i = end + 1 if end != -1 else len(text)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Pod, field_path: str, pod_ip: str, host_ip: str) -> str:
    """The value of a downward-API fieldRef. Raises ConfigError for an unsupported path."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    subscript = _SUBSCRIPT.match(field_path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {field_path!r}")


def resolve_executable(name: str, bin_dir: Path, path_env: str | None = None) -> str:
    """Find argv[0]: an absolute path, a console script in bin_dir, then PATH.

    Raises ConfigError when it is nowhere (kubelet reports StartError).
    """
    if os.path.isabs(name):
        if os.access(name, os.X_OK):
            return name
        raise ConfigError(f'exec: "{name}": no such file or executable')
    candidate = bin_dir / name
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name, path=path_env)
    if found:
        return found
    raise ConfigError(f'exec: "{name}": executable file not found in {bin_dir} or $PATH')


def container_argv(container: Container, env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expanded; an image of ours defaults to its console script.

    Raises ConfigError when there is nothing to run.
    """
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        repository = image_repository(container.get("image", ""))
        if repository is None:
            raise ConfigError(f"container {container['name']!r} has no command to run")
        command = [ENTRYPOINTS[repository]]
    return [expand_references(part, env) for part in command + args]


def named_port(container: Container, port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ConfigError(f"container {container['name']!r} has no port named {port!r}")


def grace_period_seconds(pod: Pod) -> int:
    """How long a deleted pod's processes get between SIGTERM and SIGKILL."""
    meta = pod["metadata"]
    if meta.get("deletionGracePeriodSeconds") is not None:
        return int(meta["deletionGracePeriodSeconds"])
    value = pod["spec"].get("terminationGracePeriodSeconds")
    return 30 if value is None else int(value)


def emptydir_mounts(pod: Pod, container: Container) -> dict[str, str]:
    """mountPath -> volume name, for the container's emptyDir mounts."""
    empty = {
        volume["name"]
        for volume in pod.get("spec", {}).get("volumes") or []
        if "emptyDir" in volume
    }
    return {
        mount["mountPath"].rstrip("/") or "/": mount["name"]
        for mount in container.get("volumeMounts") or []
        if mount.get("name") in empty
    }


def redirect_paths(env: Mapping[str, str], mounts: Mapping[str, Path]) -> dict[str, str]:
    """The image's filesystem does not exist here: an env value that is a path
    under a mount point (HF_HOME=/cache/huggingface) is redirected to the
    folder that stands in for the volume on this machine."""
    out = dict(env)
    # Longest mount first: /cache/x wins over /cache.
    ordered = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
    for name, value in env.items():
        for mount_path, folder in ordered:
            if value == mount_path or value.startswith(mount_path + "/"):
                out[name] = str(folder) + value[len(mount_path) :]
                break
    return out
