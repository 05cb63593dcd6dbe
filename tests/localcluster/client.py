"""A small synchronous client for the admin: raw REST on dicts, and kubectl.

Used while the cluster starts, by the failure-injection commands and by
tests that want plain dicts. Async code uses kubernetes_asyncio (see the
pytest plugin's `kube_api` fixture) or the runtime's own client.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubeinfer.localcluster.certs import ClusterPki


class KubeError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class KubeClient:
    """The admin's view of one cluster (client certificate in system:masters)."""

    def __init__(self, server: str, pki: ClusterPki, kubectl: Path | None = None,
                 kubeconfig: Path | None = None) -> None:  # fmt: skip
        self.server = server
        self._kubectl = kubectl
        self._kubeconfig = kubeconfig
        self._context = ssl.create_default_context(cafile=str(pki.ca.cert))
        self._context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Any:
        """One API call; the decoded JSON answer. Raises KubeError on an error status."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=timeout) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise KubeError(error.code, message) from None
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run kubectl as the admin; its stdout. Raises CalledProcessError when check fails."""
        if self._kubectl is None or self._kubeconfig is None:
            raise RuntimeError("this client was made without kubectl")
        done = subprocess.run(
            [str(self._kubectl), "--kubeconfig", str(self._kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, done.args, done.stdout, done.stderr
            )
        return done.stdout
