"""Target labels every kubeinfer series carries once scraped, and the
metric names each component exports.

Scrape configs (the chart's PodMonitors and the plain scrape config, see
`scrape.py`) copy pod metadata into these labels. The names are what the
common annotation-based "kubernetes-pods" job makes of them too (a
``labelmap`` of pod labels plus ``namespace``, ``pod`` and ``node``), so the
dashboards and alerts work with either without edits.
"""

from typing import Final

NAMESPACE: Final = "namespace"
POD: Final = "pod"
NODE: Final = "node"
# From the pod labels kubeinfer.io/service, kubeinfer.io/revision and
# app.kubernetes.io/component (labelmap's spelling).
SERVICE: Final = "kubeinfer_io_service"
REVISION: Final = "kubeinfer_io_revision"
COMPONENT: Final = "app_kubernetes_io_component"
# The operator's per-InferenceService gauges name the InferenceService's
# namespace so (the operator pod's own is `namespace`).
SERVICE_NAMESPACE: Final = "service_namespace"

# Dashboard template variables.
VAR_NAMESPACE: Final = "namespace"
VAR_SERVICE: Final = "inferenceservice"


def pods(extra: str = "") -> str:
    """Label matchers selecting the chosen InferenceServices' pod series."""
    base = f'{NAMESPACE}=~"${VAR_NAMESPACE}", {SERVICE}=~"${VAR_SERVICE}"'
    return "{" + base + (", " + extra if extra else "") + "}"


def services(extra: str = "") -> str:
    """Label matchers selecting the chosen InferenceServices' operator gauges."""
    base = f'{SERVICE_NAMESPACE}=~"${VAR_NAMESPACE}", {SERVICE}=~"${VAR_SERVICE}"'
    return "{" + base + (", " + extra if extra else "") + "}"
