"""KWOK's configuration: the stages that drive simulated nodes and pods.

KWOK v0.8 applies no lifecycle unless stages are given. Ours are KWOK's
"fast" node/pod stages with two changes:

- pods that run one of our images are excluded from every pod stage: the
  local runtime runs them for real and owns their status;
- a node annotated with NODE_DOWN_ANNOTATION is taken out of the
  initialise/heartbeat stages and marked NotReady once (failure injection).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster.topology import NODE_DOWN_ANNOTATION
from kubeinfer.operator.api.constants import (
    IMAGE_REPOSITORY_OPERATOR,
    IMAGE_REPOSITORY_ROUTER,
    IMAGE_REPOSITORY_WORKER,
    IMAGE_REPOSITORY_WORKER_CPU,
)

RUNTIME_REPOSITORIES = (
    IMAGE_REPOSITORY_WORKER,
    IMAGE_REPOSITORY_WORKER_CPU,
    IMAGE_REPOSITORY_ROUTER,
    IMAGE_REPOSITORY_OPERATOR,
)
# An image of ours: one of the repositories, then a tag, a digest or nothing.
RUNTIME_IMAGE_PATTERN = (
    "^(" + "|".join(re.escape(repo) for repo in RUNTIME_REPOSITORIES) + ")([:@]|$)"
)

_READY_STATUS = '.status.conditions.[] | select( .type == "Ready" ) | .status'
_NODE_DOWN = f'.metadata.annotations["{NODE_DOWN_ANNOTATION}"]'
# jq: true when any (init) container runs one of our images.
_RUNS_OUR_IMAGE = (
    "[ .spec.containers[]?, .spec.initContainers[]? | .image | "
    f"test({json.dumps(RUNTIME_IMAGE_PATTERN)}) ] | any"
)
_NOT_OURS = {"key": _RUNS_OUR_IMAGE, "operator": "NotIn", "values": ["true"]}
_NODE_UP = {"key": _NODE_DOWN, "operator": "NotIn", "values": ["true"]}

_NODE_CONDITIONS = """
{{ $now := Now }}
{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $lastTransitionTime | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
"""

_NODE_INITIALIZE_TEMPLATE = (
    _NODE_CONDITIONS
    + """
{{ with NodePort }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ . }}
{{ end }}
allocatable:
{{ YAML .status.allocatable 1 }}
capacity:
{{ YAML .status.capacity 1 }}
nodeInfo:
  architecture: amd64
  bootID: ""
  containerRuntimeVersion: "kubeinfer-localruntime"
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  machineID: ""
  operatingSystem: linux
  osImage: ""
  systemUUID: ""
phase: Running
"""
)

_NODE_DOWN_TEMPLATE = """
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
{{ if eq .type "Ready" }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: "node taken down by kubeinfer cluster node-down"
  reason: KubeletNotReady
  status: "False"
  type: Ready
{{ else }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
{{ end }}
"""

_POD_READY_TEMPLATE = """
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
{{ range .spec.readinessGates }}
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: {{ .conditionType | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" )
   ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _stage(
    name: str, kind: str, selector: list[dict[str, Any]], nxt: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": selector},
            **extra,
            "next": nxt,
        },
    }


def build_stages() -> list[dict[str, Any]]:
    """Every stage KWOK runs for the local cluster."""
    not_ready = {"key": _READY_STATUS, "operator": "NotIn", "values": ["True"]}
    ready = {"key": _READY_STATUS, "operator": "In", "values": ["True"]}
    running = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
    return [
        _stage(
            "node-initialize", "Node", [not_ready, _NODE_UP],
            {"statusTemplate": _NODE_INITIALIZE_TEMPLATE},
        ),
        # Leases keep the node alive for the node lifecycle controller; the
        # status heartbeat only refreshes conditions now and then.
        _stage(
            "node-heartbeat-with-lease", "Node", [running, ready, _NODE_UP],
            {"statusTemplate": _NODE_CONDITIONS},
            delay={"durationMilliseconds": 60000, "jitterDurationMilliseconds": 65000},
        ),
        _stage(
            "node-down", "Node",
            [ready, {"key": _NODE_DOWN, "operator": "In", "values": ["true"]}],
            {"statusTemplate": _NODE_DOWN_TEMPLATE},
        ),
        _stage(
            "pod-ready", "Pod",
            [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                {"key": _READY_STATUS, "operator": "NotIn", "values": ["True"]},
                _NOT_OURS,
            ],
            {"statusTemplate": _POD_READY_TEMPLATE},
        ),
        _stage(
            "pod-delete", "Pod",
            [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}, _NOT_OURS],
            {"delete": True},
        ),
    ]  # fmt: skip


def write_kwok_config(path: Path) -> Path:
    """Write KWOK's --config file: just the stages (a KwokConfiguration in the
    file would replace every default option, and flags set the rest)."""
    path.write_text(yaml.safe_dump_all(build_stages(), sort_keys=False))
    return path
