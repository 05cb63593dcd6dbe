"""Failure injection by hand or from tests: kill a pod's process, take a node down."""

from __future__ import annotations

import signal
from pathlib import Path

from kubeinfer.localcluster.certs import pki_paths
from kubeinfer.localcluster.components import Layout
from kubeinfer.localcluster.health import AdminApi
from kubeinfer.localcluster.runtime.records import ProcessRecord, signal_pod
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.topology import NODE_DOWN_ANNOTATION


class NoCluster(RuntimeError):
    """No cluster is running in the given directory."""


def _state(root: Path) -> ClusterState:
    state = ClusterState.load(Layout(root).state_file)
    if state is None:
        raise NoCluster(f"no cluster is running in {root} (kubeinfer cluster up)")
    return state


def kill_pod(
    root: Path,
    namespace: str,
    pod: str,
    container: str | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> list[ProcessRecord]:
    """Signal the local process(es) of a runtime pod, as if the container crashed.

    Raises NoCluster when no cluster runs in root.
    """
    state = _state(root)
    return signal_pod(Path(state.root) / "runtime", namespace, pod, container, sig)


def _admin(root: Path) -> AdminApi:
    return AdminApi(_state(root).server, pki_paths(Layout(root).pki))


def set_node_down(root: Path, node: str, down: bool) -> None:
    """Mark a simulated node NotReady (its pod processes are killed) or bring it back.

    Raises NoCluster when no cluster runs in root.
    """
    value = "true" if down else None
    _admin(root).merge_patch(
        f"/api/v1/nodes/{node}", {"metadata": {"annotations": {NODE_DOWN_ANNOTATION: value}}}
    )
