"""The Helm chart as `helm template` renders it (helm built from Go modules
by the local cluster), for tests that apply what the chart ships."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.localcluster.build import HELM, BuildError, ensure_target

CHART = Path(__file__).resolve().parents[3] / "helm" / "kubeinfer"
KUBE_VERSION = "1.36.0"

log = logging.getLogger(__name__)


def render_chart(
    release: str, namespace: str, values: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The chart's objects; fails the test (never skips) when helm can't be built."""
    try:
        helm = ensure_target(HELM, log.info) / "helm"
    except BuildError as error:
        pytest.fail(f"cannot build helm from tests/localcluster/go/helm: {error}")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as values_file:
        values_file.write(json.dumps(values or {}))
        values_file.flush()
        done = subprocess.run(
            [str(helm), "template", release, str(CHART), "--namespace", namespace,
             "--kube-version", KUBE_VERSION, "--values", values_file.name],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def chart_object(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found
