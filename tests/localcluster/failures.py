"""Failure injection by hand or from tests: kill a pod's process, take a node down."""

from __future__ import annotations

import signal
from pathlib import Path

from kubeinfer.localcluster.certs import pki_paths
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.components import Layout
from kubeinfer.localcluster.runtime.records import ProcessRecord, signal_pod
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.topology import NODE_DOWN_ANNOTATION


class NoClusterError(RuntimeError):
    """No cluster is running in the given directory."""


def _state(root: Path) -> ClusterState:
    state = ClusterState.load(Layout(root).state_file)
    if state is None:
        raise NoClusterError(f"no cluster is running in {root} (kubeinfer cluster up)")
    return state


def kill_pod(
    root: Path,
    namespace: str,
    pod: str,
    container: str | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> list[ProcessRecord]:
    """Signal the local process(es) of a runtime pod, as if the container crashed.

    Raises NoClusterError when no cluster runs in root.
    """
    state = _state(root)
    return signal_pod(Path(state.root) / "runtime", namespace, pod, container, sig)


def admin_client(root: Path) -> KubeClient:
    """The admin client of the cluster running in root. Raises NoClusterError when none is."""
    state = _state(root)
    return KubeClient(
        state.server, pki_paths(Layout(root).pki), Path(state.kubectl), Path(state.kubeconfig)
    )


def set_node_down(root: Path, node: str, down: bool) -> None:
    """Mark a simulated node NotReady (its pod processes are killed) or bring it back.

    Raises NoClusterError when no cluster runs in root.
    """
    value = "true" if down else None
    admin_client(root).merge_patch(
        f"/api/v1/nodes/{node}", {"metadata": {"annotations": {NODE_DOWN_ANNOTATION: value}}}
    )
