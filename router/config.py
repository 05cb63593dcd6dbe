"""Router settings (command line) and routing table documents.

Per-service behaviour (strategy, retries, timeouts, queue, health checks)
comes from the routing table the operator publishes; only process-level
knobs (ports, processes, limits, log) are flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubeinfer.operator.api.constants import ENV_API_KEY, ENV_BIND_HOST, ROUTER_HTTP_PORT
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router.pool import EjectionPolicy
from pydantic import ValidationError


class TableError(Exception):
    """A routing table document that can't be used (the last good one stays)."""


@dataclass
class Settings:
    host: str = field(default_factory=lambda: os.environ.get(ENV_BIND_HOST) or "0.0.0.0")
    port: int = ROUTER_HTTP_PORT
    config: str | None = None
    watch: str | None = None  # NAMESPACE/NAME of the routes ConfigMap
    processes: int = 1
    max_body_bytes: int = 32 * 1024 * 1024
    access_log: str = "-"
    log_level: str = "info"
    ejection: EjectionPolicy = field(default_factory=EjectionPolicy)
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_second: float = 5.0
    scrape_interval: float = 2.0
    stats_window: int = 60
    upstream_idle_timeout: float = 4.0
    drain_seconds: float = 30.0
    # Seconds a client has to send a whole request (head and body) once its
    # connection is idle: slow or silent clients (slowloris) are cut, with a
    # 408 when a request had begun. nginx's client_header_timeout is 60 s.
    request_read_timeout: float = 60.0
    reload_interval: float = 1.0
    # Clients must send `Authorization: Bearer <key>` when set.
    api_key: str | None = field(default_factory=lambda: os.environ.get(ENV_API_KEY) or None)
    # Set by the supervisor for --processes > 1.
    worker_index: int | None = None
    control_dir: str | None = None


def parse_table(text: str | bytes) -> RoutingTable:
    """A routing table from JSON or YAML text. Raises `TableError`."""
    try:
        data = yaml.safe_load(text) if not _looks_like_json(text) else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TableError(f"not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TableError("the routing table must be a mapping")
    try:
        return RoutingTable.model_validate(data)
    except ValidationError as exc:
        raise TableError(_short(exc)) from None


def load_table_file(path: str | Path) -> RoutingTable:
    """Read and parse a routing table file. Raises `TableError`."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise TableError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_table(text)


def _looks_like_json(text: str | bytes) -> bool:
    stripped = text.lstrip()
    return stripped[:1] in ("{", b"{")


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(document)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
