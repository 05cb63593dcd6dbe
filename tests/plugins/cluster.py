"""pytest fixtures for tests on the local cluster.

- `local_cluster` (session): builds the binaries (cached) and starts one
  cluster for the whole session in a temporary folder; stops it at the end.
  If it cannot be built or started, every test that needs it errors with
  the reason: cluster tests are never skipped.
  Set KUBEINFER_TEST_CLUSTER_DIR to use a cluster you started by hand
  (`kubeinfer cluster up`); it is then left running.
- `kube` (session): a synchronous admin client (dicts) with `kubectl(...)`.
- `namespace` (function): a fresh namespace per test under Pod Security
  "restricted" (enforced by the API server), deleted afterwards
  (the fixture waits until its pods are gone, so tests don't see each
  other's pods or GPUs).
- `kube_api` (function, async): a kubernetes_asyncio ApiClient as the admin.
- `wait_for` / `async_wait_for`: polling with a deadline (see waiting.py).
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster import controlplane
from kubeinfer.localcluster.build import BuildError
from kubeinfer.localcluster.client import KubeClient
from kubeinfer.localcluster.failures import admin_client
from kubeinfer.localcluster.health import StartupError
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.localcluster.waiting import async_wait_for, wait_for

__all__ = ["async_wait_for", "wait_for"]

ENV_TEST_CLUSTER_DIR = "KUBEINFER_TEST_CLUSTER_DIR"
_NAMESPACE_GONE_TIMEOUT = 60.0
_TEARDOWN_GRACE_SECONDS = 1


def _progress(message: str) -> None:
    # Straight to the terminal: a cold build takes minutes and must show progress.
    print(f"[localcluster] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[ClusterState]:
    """One running cluster for the session."""
    existing = os.environ.get(ENV_TEST_CLUSTER_DIR)
    if existing:
        state = ClusterState.load(Path(existing) / "cluster.json")
        if state is None or not controlplane.is_running(state):
            pytest.fail(f"{ENV_TEST_CLUSTER_DIR}={existing}: no running cluster there")
        yield state
        return
    root = Path(tempfile.mkdtemp(prefix="kubeinfer-cluster-"))
    try:
        state = controlplane.up(root, progress=_progress, tie_to_parent=True)
    except (BuildError, StartupError) as error:
        pytest.fail(f"the local cluster could not be started: {error}", pytrace=False)
    # If the session dies without running fixture teardown, still kill everything.
    atexit.register(controlplane.kill_all_groups, state)
    try:
        yield state
    finally:
        controlplane.down(root, progress=_progress)
        atexit.unregister(controlplane.kill_all_groups)


@pytest.fixture(scope="session")
def kube(local_cluster: ClusterState) -> KubeClient:
    """The admin client of the session's cluster."""
    return admin_client(Path(local_cluster.root))


def _namespace_name(node: pytest.Item) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


# Every test namespace enforces the "restricted" Pod Security Standard
# (the API server's built-in PodSecurity admission): each pod the operator
# creates must pass it, as in a hardened production namespace.
RESTRICTED_LABELS = {
    f"pod-security.kubernetes.io/{mode}{suffix}": value
    for mode in ("enforce", "warn", "audit")
    for suffix, value in (("", "restricted"), ("-version", "latest"))
}


@pytest.fixture
def namespace(kube: KubeClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount) under Pod Security
    "restricted", removed after the test."""
    name = _namespace_name(request.node)
    kube.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": RESTRICTED_LABELS}})
    # The ServiceAccount admission plugin rejects pods until this exists.
    wait_for(
        lambda: kube.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    # The namespace first: once it is terminating, nothing (the operator, a
    # ReplicaSet) can create pods in it. Then its pods at once, with a 1 s
    # grace: a test's pods need no drain, and the namespace controller would
    # give each its full grace period (5 s or more per test, minutes in all).
    kube.delete(f"/api/v1/namespaces/{name}")
    kube.delete(f"/api/v1/namespaces/{name}/pods?gracePeriodSeconds={_TEARDOWN_GRACE_SECONDS}")
    wait_for(
        lambda: not kube.get(f"/api/v1/namespaces/{name}/pods")["items"],
        _NAMESPACE_GONE_TIMEOUT,
        what=f"the pods of namespace {name} to be gone",
    )


@pytest.fixture
async def kube_api(local_cluster: ClusterState) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient for the admin (closed after the test)."""
    from kubernetes_asyncio import config

    client = await config.new_client_from_config(config_file=local_cluster.kubeconfig)
    try:
        yield client
    finally:
        await client.close()
