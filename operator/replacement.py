"""Which worker pods have failed, and when they may be replaced (pure).

A failed pod is replaced by a new pod with a new name (the old one is
deleted), preferably on another node. Each replacement carries a failure
count in an annotation; a pod with ``k`` failures behind it must have lived
``backoff(k)`` before it is replaced again, so a model that can never load
does not hot-loop through the cluster's GPUs. A pod that lived long before
failing starts the count again: its failure is not part of a loop.
"""

from kubeinfer.operator.observe import NodeInfo, PodInfo

CRASH_LOOP_RESTARTS = 3
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
RESET_AFTER_SECONDS = 1800.0


def classify_failure(pod: PodInfo, nodes: dict[str, NodeInfo]) -> str | None:
    """Why ``pod`` must be replaced, or None when it need not be."""
    if pod.phase in ("Failed", "Succeeded"):
        detail = pod.termination_message or f"exit code {pod.exit_code}"
        return f"pod {pod.phase.lower()}: {detail}"
    if pod.gpu_fault is not None:
        return pod.gpu_fault
    if pod.node is not None:
        node = nodes.get(pod.node)
        if node is None:
            return f"node {pod.node} is gone"
        if not node.ready:
            return f"node {pod.node} is NotReady"
    if pod.restarts >= CRASH_LOOP_RESTARTS and not pod.ready:
        last = f": {pod.termination_message}" if pod.termination_message else ""
        return f"crash loop ({pod.restarts} restarts){last}"
    return None


def backoff_seconds(failures: int) -> float:
    """How long a pod with ``failures`` failures behind it must live before
    it may be replaced: 0, 10 s, 20 s, 40 s, ... up to 5 minutes."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE_SECONDS * 2.0 ** (failures - 1), BACKOFF_MAX_SECONDS)


def replace_at(pod: PodInfo) -> float:
    """The earliest time ``pod`` may be replaced."""
    return (pod.created_at or 0.0) + backoff_seconds(pod.failures)


def failures_after(pod: PodInfo, now: float) -> int:
    """The failure count the replacement of ``pod`` carries."""
    lived = now - (pod.created_at if pod.created_at is not None else now)
    return 1 if lived >= RESET_AFTER_SECONDS else pod.failures + 1
