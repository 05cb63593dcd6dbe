"""Pure parts of the local cluster: pod specs, IPs, phases, probes, nodes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from kubeinfer.localcluster.runtime.container import Backoff
from kubeinfer.localcluster.runtime.ipam import AddressesExhaustedError, allocate
from kubeinfer.localcluster.runtime.podspec import (
    ConfigError,
    container_argv,
    emptydir_mounts,
    expand_references,
    field_value,
    grace_period_seconds,
    image_repository,
    is_runtime_pod,
    named_port,
    redirect_paths,
    resolve_executable,
)
from kubeinfer.localcluster.runtime.podstatus import ContainerView, pod_phase
from kubeinfer.localcluster.runtime.probes import ProbeSpec, ProbeState
from kubeinfer.localcluster.topology import DEFAULT_TOPOLOGY, build_node, expand


class TestImageRepository:
    @pytest.mark.parametrize(
        ("image", "expected"),
        [
            ("ghcr.io/kubeinfer/worker:0.1.0", "ghcr.io/kubeinfer/worker"),
            ("ghcr.io/kubeinfer/router", "ghcr.io/kubeinfer/router"),
            ("ghcr.io/kubeinfer/operator@sha256:abc", "ghcr.io/kubeinfer/operator"),
            ("ghcr.io/kubeinfer/worker-cpu:0.1.0", "ghcr.io/kubeinfer/worker-cpu"),
            ("ghcr.io/kubeinfer/worker-debug:1", None),
            ("docker.io/ghcr.io/kubeinfer/worker:1", None),
            ("registry.k8s.io/pause:3.10", None),
        ],
    )
    def test_cases(self, image: str, expected: str | None) -> None:
        assert image_repository(image) == expected

    def test_pod_with_one_of_our_images_is_ours(self) -> None:
        containers = [{"image": "busybox"}, {"image": "ghcr.io/kubeinfer/router:1"}]
        pod = {"spec": {"containers": containers}}
        assert is_runtime_pod(pod)
        assert not is_runtime_pod({"spec": {"containers": [{"image": "busybox"}]}})


class TestExpandReferences:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("$(A)", "a"),
            ("x-$(A)-$(B)", "x-a-b"),
            ("$$(A)", "$(A)"),
            ("$(MISSING)", "$(MISSING)"),
            ("$(A", "$(A"),
            ("plain $ sign", "plain $ sign"),
        ],
    )
    def test_cases(self, text: str, expected: str) -> None:
        assert expand_references(text, {"A": "a", "B": "b"}) == expected


POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "gpu-h100-0", "serviceAccountName": "sa"},
}


class TestFieldValue:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("metadata.name", "p"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u1"),
            ("spec.nodeName", "gpu-h100-0"),
            ("spec.serviceAccountName", "sa"),
            ("status.podIP", "127.1.0.254"),
            ("status.hostIP", "127.1.0.1"),
            ("metadata.labels['app']", "x"),
            ("metadata.annotations['none']", ""),
        ],
    )
    def test_cases(self, path: str, expected: str) -> None:
        assert field_value(POD, path, "127.1.0.254", "127.1.0.1") == expected

    def test_unknown_path_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError):
            field_value(POD, "spec.unknown", "", "")


class TestContainerArgv:
    def test_command_and_args_are_expanded(self) -> None:
        container = {"name": "c", "image": "x", "command": ["run"], "args": ["--port=$(PORT)"]}
        assert container_argv(container, {"PORT": "8000"}) == ["run", "--port=8000"]

    def test_our_image_without_command_runs_its_console_script(self) -> None:
        container = {"name": "c", "image": "ghcr.io/kubeinfer/worker:1", "args": ["--engine", "s"]}
        assert container_argv(container, {}) == ["kubeinfer-worker", "--engine", "s"]

    def test_resolution_prefers_bin_dir_then_path(self, tmp_path: Path) -> None:
        script = tmp_path / "kubeinfer-worker"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
        assert resolve_executable("kubeinfer-worker", tmp_path) == str(script)
        assert resolve_executable(sys.executable, tmp_path) == sys.executable
        with pytest.raises(ConfigError):
            resolve_executable("no-such-command-anywhere", tmp_path, path_env="")

    def test_named_ports(self) -> None:
        container = {"name": "c", "ports": [{"name": "http", "containerPort": 8000}]}
        assert named_port(container, "http") == 8000
        assert named_port(container, 9000) == 9000
        with pytest.raises(ConfigError):
            named_port(container, "metrics")


@pytest.mark.parametrize(
    ("meta", "spec", "expected"),
    [
        ({}, {}, 30),
        ({}, {"terminationGracePeriodSeconds": 5}, 5),
        ({"deletionGracePeriodSeconds": 0}, {"terminationGracePeriodSeconds": 5}, 0),
    ],
)
def test_grace_period(meta: dict[str, Any], spec: dict[str, Any], expected: int) -> None:
    assert grace_period_seconds({"metadata": meta, "spec": spec}) == expected


class TestAllocate:
    def test_takes_the_highest_free_address(self) -> None:
        assert allocate("127.1.3.0/24", []) == "127.1.3.254"
        assert allocate("127.1.3.0/24", ["127.1.3.254"]) == "127.1.3.253"

    def test_never_the_node_address(self) -> None:
        with pytest.raises(AddressesExhaustedError):
            allocate("127.1.3.0/30", ["127.1.3.2"])


def view(**flags: bool) -> ContainerView:
    defaults = dict(ever_started=False, running=False, ready=False, finished=False, succeeded=False)
    return ContainerView(**(defaults | flags))


RUNNING = view(ever_started=True, running=True)
DONE_OK = view(ever_started=True, finished=True, succeeded=True)
DONE_FAILED = view(ever_started=True, finished=True)
RESTARTING = view(ever_started=True)


@pytest.mark.parametrize(
    ("init", "main", "phase"),
    [
        ([], [view()], "Pending"),
        ([], [RUNNING], "Running"),
        ([], [RESTARTING], "Running"),
        ([], [DONE_OK], "Succeeded"),
        ([], [DONE_OK, DONE_FAILED], "Failed"),
        ([], [DONE_OK, RUNNING], "Running"),
        ([RUNNING], [view()], "Pending"),
        ([DONE_FAILED], [view()], "Failed"),
        ([DONE_OK], [RUNNING], "Running"),
    ],
)
def test_pod_phase(init: list[ContainerView], main: list[ContainerView], phase: str) -> None:
    assert pod_phase(init, main) == phase


class TestProbeState:
    def spec(self, **probe: Any) -> ProbeSpec:
        found = ProbeSpec.from_container({"readinessProbe": probe}, "readiness")
        assert found is not None
        return found

    def test_defaults(self) -> None:
        spec = self.spec(httpGet={"port": 1})
        assert (spec.period, spec.timeout, spec.failure_threshold) == (10, 1, 3)

    def test_thresholds(self) -> None:
        state = ProbeState(self.spec(successThreshold=2, failureThreshold=2))
        assert [state.record(r) for r in (True, True, False, False, True)] == [
            None,
            True,
            None,
            False,
            None,
        ]


def test_backoff_doubles_and_caps() -> None:
    backoff = Backoff(initial=1, maximum=5)
    assert [backoff.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


class TestNodes:
    def test_default_topology(self) -> None:
        nodes = expand(DEFAULT_TOPOLOGY, octet=7)
        assert [n.name for n in nodes] == ["gpu-h100-0", "gpu-h100-1", "gpu-a400-0"]
        assert [n.pod_cidr for n in nodes] == ["127.7.0.0/24", "127.7.1.0/24", "127.7.2.0/24"]

    def test_node_object_has_gfd_labels_and_gpu_capacity(self) -> None:
        node = build_node(expand(DEFAULT_TOPOLOGY, octet=1)[2])
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-RTX-A400"
        assert labels["nvidia.com/gpu.memory"] == "4096"
        assert labels["nvidia.com/gpu.count"] == "2"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        assert node["spec"]["podCIDR"] == "127.1.2.0/24"


POD_WITH_VOLUMES = {
    "spec": {
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "deep", "emptyDir": {}},
            {"name": "model", "persistentVolumeClaim": {"claimName": "weights"}},
        ]
    }
}
WORKER = {
    "name": "worker",
    "volumeMounts": [
        {"name": "cache", "mountPath": "/cache"},
        {"name": "deep", "mountPath": "/cache/deep/"},
        {"name": "model", "mountPath": "/models"},
    ],
}


def test_emptydir_mounts_lists_only_emptydir_volumes() -> None:
    assert emptydir_mounts(POD_WITH_VOLUMES, WORKER) == {"/cache": "cache", "/cache/deep": "deep"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/cache", "/here/cache"),
        ("/cache/huggingface", "/here/cache/huggingface"),
        ("/cache/deep/x", "/here/deep/x"),  # the longest mount point wins
        ("/cacheless", "/cacheless"),  # a prefix of a name is not a path under it
        ("/models/tiny", "/models/tiny"),  # not an emptyDir: left alone
        ("relative/cache", "relative/cache"),
    ],
)
def test_redirect_paths(value: str, expected: str) -> None:
    mounts = {"/cache": Path("/here/cache"), "/cache/deep": Path("/here/deep")}
    assert redirect_paths({"X": value}, mounts) == {"X": expected}
