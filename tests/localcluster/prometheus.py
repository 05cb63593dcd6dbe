"""A real Prometheus (Debian's `prometheus` package) for tests and the demo.

`make prometheus` installs it (`make test` and `make demo` depend on that
target); nothing here installs or skips: a missing binary is an error that
says how to get it. The server listens on loopback only, keeps its data in
a temporary folder and is stopped by its owner.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster.waiting import wait_for

INSTALL_HINT = "run `make prometheus` (apt-get install prometheus: Debian's package has both)"


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusServer:
    """``prometheus`` with ``config`` (a dict) and optional rule files, on 127.0.0.1."""

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
        binary = tool("prometheus")
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
