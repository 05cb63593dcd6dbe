"""pytest fixtures that run the operator on the local cluster, as in production.

- `operator_identity` (session): the CRD and the operator's least-privilege
  identity; a kubeconfig with its ServiceAccount's token.
- `running_operator` (session): `kubeinfer-operator` as a real process with
  that identity; tests may kill and restart it.

Both are thin: the work is in kubeinfer.localcluster.operatorproc, which
bench and the demo use too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.operatorproc import OperatorProcess, install_operator_identity
from kubeinfer.localcluster.state import ClusterState


@pytest.fixture(scope="session")
def operator_identity(
    local_cluster: ClusterState, kube: KubeClient, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig for the operator's ServiceAccount (least-privilege RBAC)."""
    out = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return install_operator_identity(kube, local_cluster, out)


@pytest.fixture(scope="session")
def running_operator(
    operator_identity: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    handle = OperatorProcess(
        operator_identity, tmp_path_factory.mktemp("operator-log") / "operator.log"
    )
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        sys.stderr.write(f"\n[operator] log: {handle.log}\n")
