"""Bring the local cluster up and down.

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
KWOK and the local runtime, each in its own process group, creates the
simulated nodes and waits until all of it is healthy. `down` stops them in
reverse order and then sweeps any pod process the runtime left behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.localcluster import components as comp
from kubeinfer.localcluster.build import Binaries, ensure_cluster_binaries
from kubeinfer.localcluster.certs import ClusterPki, generate_pki, pki_paths
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.localcluster.health import StartupError, http_ok, tail, wait_until
from kubeinfer.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubeinfer.localcluster.kwok_stages import write_kwok_config
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.procs import pid_alive, signal_group, spawn, stop_group
from kubeinfer.localcluster.runtime.records import sweep_pod_processes
from kubeinfer.localcluster.state import (
    ClusterState,
    Component,
    claim_octet,
    release_octet,
    update_claim,
)
from kubeinfer.localcluster.topology import (
    SimulatedNode,
    build_node,
    expand,
    load_topology,
)

Progress = Callable[[str], None]

# Stop order: the runtime first (it stops pod processes), etcd last.
_STOP_ORDER = ("runtime", "kwok", "kube-scheduler", "kube-controller-manager",
               "kube-apiserver", "etcd")  # fmt: skip
_STARTUP_TIMEOUT = 90.0


def _ports() -> comp.Ports:
    return comp.Ports(*(free_port() for _ in range(6)))


class _Starter:
    """Starts components and remembers them, so a failed `up` can undo itself."""

    def __init__(self, layout: comp.Layout, tie_to_parent: bool) -> None:
        self.layout = layout
        self.tie_to_parent = tie_to_parent
        self.started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.argvs: dict[str, list[str]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.layout.logs / f"{name}.log"
        process = spawn(
            argv, log_path=log, env=env, cwd=self.layout.root, tie_to_parent=self.tie_to_parent
        )
        self.started[name] = (process, log)
        self.argvs[name] = argv

    def check_alive(self) -> None:
        for name, (process, log) in self.started.items():
            if process.poll() is not None:
                raise StartupError(
                    f"{name} exited with code {process.returncode}; last lines of {log}:\n"
                    + tail(log)
                )

    def components(self) -> list[Component]:
        return [
            Component(name=name, pid=process.pid, log=str(log), argv=self.argvs[name])
            for name, (process, log) in self.started.items()
        ]


def _component_kubeconfigs(layout: comp.Layout, pki: ClusterPki, server: str) -> dict[str, Path]:
    users = {
        "admin": pki.admin,
        "controller-manager": pki.controller_manager,
        "scheduler": pki.scheduler,
    }
    paths = {}
    for name, pair in users.items():
        path = layout.admin_kubeconfig if name == "admin" else layout.kubeconfigs / f"{name}.yaml"
        config = build_kubeconfig(
            server, pki.ca.cert, user=name, client_cert=pair.cert, client_key=pair.key
        )
        paths[name] = write_kubeconfig(path, config)
    return paths


def _create_nodes(api: KubeClient, nodes: list[SimulatedNode], layout: comp.Layout) -> None:
    manifests = [build_node(node) for node in nodes]
    layout.nodes_manifest.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    for manifest in manifests:
        api.create("/api/v1/nodes", manifest)


def _nodes_ready(api: KubeClient, names: set[str]) -> bool:
    ready = set()
    for node in api.get("/api/v1/nodes")["items"]:
        conditions = node.get("status", {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            ready.add(node["metadata"]["name"])
    return names <= ready


def _default_service_account_exists(api: KubeClient) -> bool:
    return api.exists("/api/v1/namespaces/default/serviceaccounts/default")


def _runtime_argv(layout: comp.Layout) -> list[str]:
    return [
        # -P: never put the cwd on sys.path (the repo's operator/ would shadow the stdlib).
        sys.executable, "-P", "-m", "kubeinfer.localcluster.runtime",
        "--kubeconfig", str(layout.admin_kubeconfig),
        "--state-dir", str(layout.runtime),
    ]  # fmt: skip


def _runtime_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def up(
    root: Path,
    *,
    topology_path: Path | None = None,
    progress: Progress = print,
    tie_to_parent: bool = False,
    binaries: Binaries | None = None,
) -> ClusterState:
    """Start a cluster whose state lives in root and return its state.

    An already running cluster in root is returned as is. Raises
    StartupError (or BuildError) with the reason when it cannot start.
    """
    layout = comp.Layout(root)
    existing = ClusterState.load(layout.state_file)
    if existing and is_running(existing):
        progress(f"cluster already running (kubeconfig {existing.kubeconfig})")
        return existing
    if existing:
        down(root, progress=progress)
    binaries = binaries or ensure_cluster_binaries(progress)
    started_at = time.monotonic()
    for stale in (layout.etcd_data, layout.runtime, layout.pki, layout.logs):
        shutil.rmtree(stale, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    topology = load_topology(topology_path)
    octet = claim_octet([os.getpid()])
    starter = _Starter(layout, tie_to_parent)
    try:
        state = _start_all(layout, binaries, topology, octet, starter, progress)
    except BaseException:
        _stop_started(starter, octet)
        raise
    progress(f"cluster up in {time.monotonic() - started_at:.1f}s; kubeconfig {state.kubeconfig}")
    return state


def _start_all(
    layout: comp.Layout,
    binaries: Binaries,
    topology: Any,
    octet: int,
    starter: _Starter,
    progress: Progress,
) -> ClusterState:
    pki = generate_pki(layout.pki)
    ports = _ports()
    server = f"https://{comp.LOOPBACK}:{ports.apiserver}"
    nodes = expand(topology, octet)

    starter.start("etcd", comp.etcd_argv(binaries.etcd, layout, ports))
    wait_until(
        "etcd",
        lambda: http_ok(f"http://{comp.LOOPBACK}:{ports.etcd_client}/health"),
        _STARTUP_TIMEOUT,
        starter.check_alive,
    )
    progress("etcd is up")
    starter.start("kube-apiserver", comp.apiserver_argv(binaries.kube_apiserver, pki, ports))
    kubeconfigs = _component_kubeconfigs(layout, pki, server)
    api = KubeClient(server, pki, binaries.kubectl, layout.admin_kubeconfig)

    def apiserver_ready() -> bool:
        try:
            return bool(api.get("/readyz") == "ok")
        except (KubeError, OSError):
            return False

    wait_until("kube-apiserver /readyz", apiserver_ready, _STARTUP_TIMEOUT, starter.check_alive)
    progress("kube-apiserver is ready")

    write_kwok_config(layout.kwok_config)
    starter.start(
        "kube-controller-manager",
        comp.controller_manager_argv(
            binaries.kube_controller_manager, pki, ports, kubeconfigs["controller-manager"]
        ),
    )
    starter.start(
        "kube-scheduler",
        comp.scheduler_argv(binaries.kube_scheduler, ports, kubeconfigs["scheduler"]),
    )
    starter.start("kwok", comp.kwok_argv(binaries.kwok, layout, ports, kubeconfigs["admin"]))
    starter.start("runtime", _runtime_argv(layout), env=_runtime_env())
    _create_nodes(api, nodes, layout)

    checks: list[tuple[str, Callable[[], bool]]] = [
        ("kube-controller-manager /healthz",
         lambda: http_ok(f"https://{comp.LOOPBACK}:{ports.controller_manager}/healthz")),
        ("kube-scheduler /healthz",
         lambda: http_ok(f"https://{comp.LOOPBACK}:{ports.scheduler}/healthz")),
        ("simulated nodes Ready", lambda: _nodes_ready(api, {n.name for n in nodes})),
        ("the default ServiceAccount (service account controller)",
         lambda: _default_service_account_exists(api)),
        ("the local runtime", lambda: (layout.runtime / "ready").exists()),
    ]  # fmt: skip
    for what, condition in checks:
        wait_until(what, condition, _STARTUP_TIMEOUT, starter.check_alive)
        progress(f"{what}: ok")

    state = ClusterState(
        root=str(layout.root),
        octet=octet,
        server=server,
        kubeconfig=str(layout.admin_kubeconfig),
        kubectl=str(binaries.kubectl),
        components=starter.components(),
        tied_to=os.getpid() if starter.tie_to_parent else None,
    )
    state.save(layout.state_file)
    update_claim(octet, [c.pid for c in state.components])
    return state


def _stop_started(starter: _Starter, octet: int) -> None:
    for name in _STOP_ORDER:
        if name in starter.started:
            process, _ = starter.started[name]
            stop_group(process.pid, grace_seconds=10, poll=process.poll)
    sweep_pod_processes(starter.layout.runtime)
    release_octet(octet)


def is_running(state: ClusterState) -> bool:
    """True when every component of the cluster is alive."""
    return all(pid_alive(c.pid) for c in state.components)


def down(root: Path, *, progress: Progress = print) -> bool:
    """Stop the cluster in root; False when there was none. Leaves no process behind."""
    layout = comp.Layout(root)
    state = ClusterState.load(layout.state_file)
    if state is None:
        sweep_pod_processes(layout.runtime)
        return False
    by_name = {c.name: c for c in state.components}
    for name in _STOP_ORDER:
        component = by_name.get(name)
        if component is None:
            continue
        # The runtime needs time to stop pod processes gracefully.
        grace = 20 if name == "runtime" else 10
        stop_group(component.pid, grace_seconds=grace, poll=functools.partial(_reap, component.pid))
        progress(f"stopped {name}")
    swept = sweep_pod_processes(layout.runtime)
    if swept:
        progress(f"killed {swept} pod process group(s) left behind")
    layout.state_file.unlink(missing_ok=True)
    # etcd preallocates a 64 MB WAL; `up` never reuses the data, logs stay.
    shutil.rmtree(layout.etcd_data, ignore_errors=True)
    release_octet(state.octet)
    return True


def _reap(pid: int) -> None:
    # When this process started the component (tests), reap it so it is not a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def kill_all_groups(state: ClusterState) -> None:
    """Last resort (interpreter exit): SIGKILL every component group at once."""
    for component in state.components:
        signal_group(component.pid, signal.SIGKILL)
    sweep_pod_processes(Path(state.root) / "runtime")


# What a chaos test may restart in place (same ports, same data directory).
RESTARTABLE = ("etcd", "kube-apiserver")


def stop_component(state: ClusterState, name: str, *, grace_seconds: float = 10) -> None:
    """Stop one component as a rolling restart does (SIGTERM, SIGKILL after the grace).

    Raises KeyError for a name that is not restartable or not running here.
    """
    component = _restartable(state, name)
    stop_group(
        component.pid, grace_seconds=grace_seconds, poll=functools.partial(_reap, component.pid)
    )


def start_component(state: ClusterState, name: str) -> None:
    """Start a stopped component again with its command line, and record its new pid.

    It dies with the process the cluster dies with, if that is this one and
    this is its main thread: PR_SET_PDEATHSIG fires when the *thread* that
    spawned it exits, and a worker thread of a pool may exit at any time.
    The state (file and object) names it for `down` and `kill_all_groups`.
    """
    component = _restartable(state, name)
    layout = comp.Layout(Path(state.root))
    main_thread = threading.current_thread() is threading.main_thread()
    process = spawn(
        component.argv,
        log_path=Path(component.log),
        cwd=layout.root,
        tie_to_parent=state.tied_to == os.getpid() and main_thread,
    )
    component.pid = process.pid
    state.save(layout.state_file)


def wait_api_ready(state: ClusterState, timeout: float = _STARTUP_TIMEOUT) -> None:
    """Wait until etcd answers /health and the API server /readyz (which checks etcd)."""
    layout = comp.Layout(Path(state.root))
    api = KubeClient(
        state.server, pki_paths(layout.pki), Path(state.kubectl), layout.admin_kubeconfig
    )
    by_name = {c.name: c for c in state.components}
    etcd_url = _flag(by_name["etcd"].argv, "--listen-client-urls")

    def check_alive() -> None:
        for name in RESTARTABLE:
            if not pid_alive(by_name[name].pid):
                raise StartupError(
                    f"{name} exited; last lines of its log:\n{tail(Path(by_name[name].log))}"
                )

    def ready() -> bool:
        if not http_ok(f"{etcd_url}/health", timeout=1):
            return False
        try:
            return bool(api.get("/readyz") == "ok")
        except (KubeError, OSError):
            return False

    wait_until("etcd and kube-apiserver ready again", ready, timeout, check_alive, interval=0.1)


def restart_component(state: ClusterState, name: str, *, grace_seconds: float = 10) -> None:
    """Restart etcd or kube-apiserver in place and wait until the API is ready again.

    Raises StartupError when it does not come back.
    """
    stop_component(state, name, grace_seconds=grace_seconds)
    start_component(state, name)
    wait_api_ready(state)


def _restartable(state: ClusterState, name: str) -> Component:
    if name not in RESTARTABLE:
        raise KeyError(f"{name} cannot be restarted in place (only {', '.join(RESTARTABLE)})")
    for component in state.components:
        if component.name == name and component.argv:
            return component
    raise KeyError(f"no restartable {name} in the cluster at {state.root}")


def _flag(argv: list[str], name: str) -> str:
    prefix = f"{name}="
    return next(arg[len(prefix) :] for arg in argv if arg.startswith(prefix))
