"""A real Prometheus for tests and the demo, and Debian's promtool.

The server is upstream Prometheus built from tests/localcluster/go/prometheus
with the other cluster binaries (`make prereqs`, `kubeinfer cluster build`):
Debian's `prometheus` package (2.42) is built without the Kubernetes service
discovery, and the tests discover the pods the way a user's Prometheus does,
with `kubernetes_sd_configs` against the API server. `promtool` comes from
Debian's package (`make prometheus`; `make test` depends on it). Nothing here
installs or skips: a missing tool is an error that says how to get it.

`kubernetes_prometheus` writes the chart's scrape job (operator/monitoring/
scrape.py, relabelings unchanged) with a `role: pod` discovery restricted to
the given namespaces; Prometheus authenticates as a ServiceAccount that may
only list and watch their pods (a Role per namespace, a TokenRequest token).
The server listens on loopback only, keeps its data in a temporary folder
and is stopped by its owner.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster.build import PROMETHEUS, Progress, ensure_target
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.monitoring.scrape import scrape_config

INSTALL_HINT = "run `make prometheus` (apt-get install prometheus: Debian's package has it)"
# The ServiceAccount Prometheus discovers pods as (one per namespace set).
SD_ACCOUNT = "prometheus-pod-sd"
# The token's file in the server's workdir.
SD_TOKEN_FILE = "sd-token"
# TokenRequest's lifetime: longer than any test or demo run.
TOKEN_SECONDS = 3600


class PrometheusMissingError(RuntimeError):
    """prometheus or promtool is not installed."""


def tool(name: str) -> Path:
    """The path of ``prometheus`` or ``promtool``; raises PrometheusMissingError."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if not found:
        raise PrometheusMissingError(f"{name} is not installed: {INSTALL_HINT}")
    return Path(found)


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("promtool")), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _stderr(message: str) -> None:
    # A cold build takes minutes: show progress on the terminal, not in captured output.
    print(f"[prometheus] {message}", file=sys.__stderr__, flush=True)


def prometheus_binary(progress: Progress = _stderr) -> Path:
    """The built ``prometheus`` (with Kubernetes SD); builds it on first use.

    Raises BuildError when the build fails.
    """
    return ensure_target(PROMETHEUS, progress) / "prometheus"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusServer:
    """``prometheus`` with ``config`` (a dict) and optional rule files, on 127.0.0.1.

    ``start`` raises BuildError when the binary cannot be built.
    """

    config: dict[str, Any]
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kubeinfer-prom-")))
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, timeout: float = 60) -> PrometheusServer:
        binary = prometheus_binary()
        config = dict(self.config)
        rule_files = []
        for name, content in self.rules.items():
            path = self.workdir / name
            path.write_text(yaml.safe_dump(content, sort_keys=False))
            rule_files.append(str(path))
        if rule_files:
            config["rule_files"] = rule_files
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = _free_port()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout, interval=0.2, what="Prometheus to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus answered {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": str(at)} if at is not None else {})
        result: list[dict[str, Any]] = self.api("query", **params)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api(
            "query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _pod_reader(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": SD_ACCOUNT, "namespace": namespace},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
    }


def _binding(namespace: str, account_namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": SD_ACCOUNT, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SD_ACCOUNT},
        "subjects": [
            {"kind": "ServiceAccount", "name": SD_ACCOUNT, "namespace": account_namespace}
        ],
    }


@contextmanager
def pod_discovery_token(kube: KubeClient, namespaces: Sequence[str]) -> Iterator[str]:
    """A token that may list and watch the pods of ``namespaces`` and nothing else.

    A ServiceAccount in the first namespace, a Role (pods: list, watch) and a
    RoleBinding in each, a token from the TokenRequest API; all removed on exit.
    """
    home = namespaces[0]
    kube.create(
        f"/api/v1/namespaces/{home}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SD_ACCOUNT}},
    )
    try:
        for namespace in namespaces:
            rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
            kube.create(f"{rbac}/roles", _pod_reader(namespace))
            kube.create(f"{rbac}/rolebindings", _binding(namespace, home))
        answer = kube.create(
            f"/api/v1/namespaces/{home}/serviceaccounts/{SD_ACCOUNT}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS},
            },
        )
        yield str(answer["status"]["token"])
    finally:
        paths = [f"/api/v1/namespaces/{home}/serviceaccounts/{SD_ACCOUNT}"]
        for namespace in namespaces:
            rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
            paths += [f"{rbac}/rolebindings/{SD_ACCOUNT}", f"{rbac}/roles/{SD_ACCOUNT}"]
        for path in paths:
            try:
                kube.delete(path)
            except KubeError as error:
                if error.status != 404:  # gone with its namespace
                    raise


def pod_sd_config(
    api_server: str, ca_file: Path, token_file: Path, namespaces: Sequence[str]
) -> dict[str, Any]:
    """A ``kubernetes_sd_configs`` entry: pods of ``namespaces``, from ``api_server``."""
    return {
        "role": "pod",
        "api_server": api_server,
        "tls_config": {"ca_file": str(ca_file)},
        "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
        "namespaces": {"names": list(namespaces)},
    }


def chart_scrape_job(sd: dict[str, Any], interval: str) -> dict[str, Any]:
    """The chart's scrape job (relabelings unchanged) with ``sd`` as its discovery."""
    (job,) = scrape_config(interval=interval)
    chart_sd = job.pop("kubernetes_sd_configs")
    if chart_sd != [{"role": "pod"}]:
        raise ValueError(f"the chart's discovery changed: {chart_sd}; update chart_scrape_job")
    job["kubernetes_sd_configs"] = [{**chart_sd[0], **sd}]
    return job


@contextmanager
def kubernetes_prometheus(
    kube: KubeClient,
    ca_file: Path,
    namespaces: Sequence[str],
    rules: dict[str, dict[str, Any]] | None = None,
    interval: str = "1s",
) -> Iterator[PrometheusServer]:
    """A started Prometheus scraping the pods of ``namespaces`` with the chart's job,
    discovered with `kubernetes_sd_configs` (role: pod) through ``kube``'s API server.

    Raises BuildError when the binary cannot be built.
    """
    with pod_discovery_token(kube, namespaces) as token:
        server = PrometheusServer({}, rules=dict(rules or {}))
        token_file = server.workdir / SD_TOKEN_FILE
        token_file.write_text(token)
        token_file.chmod(0o600)
        server.config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                chart_scrape_job(
                    pod_sd_config(kube.server, ca_file, token_file, namespaces), interval
                )
            ],
        }
        try:
            server.start()
            yield server
        finally:
            server.stop()
