"""Kubernetes pod discovery for Debian's Prometheus, over HTTP SD.

Debian builds its `prometheus` package (2.42 in bookworm) without the
Kubernetes service discovery: `kubernetes_sd_configs` is an unknown field
there. This module lists pods from the API server and serves them in
Prometheus' HTTP SD format with the labels Prometheus' own `role: pod`
discovery attaches (`__meta_kubernetes_pod_*`, one target per container
port), so the chart's relabelings (files/scrape-config.yaml) run unchanged
in Prometheus; only the discovery is ours. Loopback only.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Pod = dict[str, Any]
META = "__meta_kubernetes_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    """Prometheus' label-name sanitising: every other character becomes ``_``."""
    return _INVALID.sub("_", name)


def _pod_labels(pod: Pod) -> dict[str, str]:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    labels = {
        META + "namespace": meta["namespace"],
        META + "pod_name": meta["name"],
        META + "pod_uid": meta.get("uid", ""),
        META + "pod_ip": status.get("podIP", ""),
        META + "pod_host_ip": status.get("hostIP", ""),
        META + "pod_node_name": spec.get("nodeName", ""),
        META + "pod_phase": status.get("phase", ""),
        META + "pod_ready": "true" if ready else "false",
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[META + "pod_label_" + sanitize(key)] = value
        labels[META + "pod_labelpresent_" + sanitize(key)] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        labels[META + "pod_annotation_" + sanitize(key)] = value
        labels[META + "pod_annotationpresent_" + sanitize(key)] = "true"
    return labels


def pod_targets(pods: list[Pod]) -> list[dict[str, Any]]:
    """HTTP SD target groups for ``pods``, as `role: pod` discovers them: one
    target per container port (``podIP:port``), one port-less target per
    container without ports; pods without an IP yet are left out."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        base = _pod_labels(pod)
        for container in (pod.get("spec") or {}).get("containers") or []:
            ports = container.get("ports") or []
            for port in ports or [None]:
                labels = dict(base)
                labels[META + "pod_container_name"] = container["name"]
                labels[META + "pod_container_image"] = container.get("image", "")
                address = ip
                if port is not None:
                    address = f"{ip}:{port['containerPort']}"
                    labels[META + "pod_container_port_name"] = port.get("name", "")
                    labels[META + "pod_container_port_number"] = str(port["containerPort"])
                    labels[META + "pod_container_port_protocol"] = port.get("protocol", "TCP")
                groups.append({"targets": [address], "labels": labels})
    return groups


@contextmanager
def serve_pod_targets(list_pods: Callable[[], list[Pod]]) -> Iterator[str]:
    """Serves ``pod_targets(list_pods())`` at the yielded URL (127.0.0.1)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(pod_targets(list_pods())).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="pod-sd", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/targets"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
