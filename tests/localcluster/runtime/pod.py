"""One pod on a simulated node: its containers, its status, its deletion."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubeinfer.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubeinfer.localcluster.runtime import records
from kubeinfer.localcluster.runtime.container import (
    Backoff,
    ContainerContext,
    ContainerRunner,
    Launch,
    base_env,
    now,
)
from kubeinfer.localcluster.runtime.env import container_env
from kubeinfer.localcluster.runtime.kubeapi import ApiError, KubeApi
from kubeinfer.localcluster.runtime.podspec import (
    ConfigError,
    Container,
    Pod,
    container_argv,
    emptydir_mounts,
    grace_period_seconds,
    redirect_paths,
    resolve_executable,
)
from kubeinfer.localcluster.runtime.podstatus import (
    Conditions,
    ContainerView,
    pod_phase,
    readiness_gates_pass,
)
from kubeinfer.operator.api.constants import ENV_BIND_HOST, ENV_TERMINATION_LOG

log = logging.getLogger(__name__)

# Bound tokens die with their pod; a day outlives any test or demo.
_TOKEN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RuntimeDeps:
    """What every pod runner shares with the runtime."""

    api: KubeApi
    http: aiohttp.ClientSession
    runtime_dir: Path
    bin_dir: Path
    server: str
    ca_file: Path
    backoff: Backoff
    node_ip: Callable[[str], str]


class PodRunner:
    """Runs one pod's containers and keeps its status in the API current."""

    def __init__(self, pod: Pod, pod_ip: str, deps: RuntimeDeps) -> None:
        self.pod = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.pod_ip = pod_ip
        self.deps = deps
        self.dir = records.pod_dir(deps.runtime_dir, self.namespace, self.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node_up = asyncio.Event()
        self.node_up.set()
        self._dirty = asyncio.Event()
        self._deleting = asyncio.Event()
        self._gone = False  # the API object no longer exists
        self._last_sent: dict[str, Any] | None = None
        self._conditions = Conditions()
        self._start_time = now()
        self._kubeconfig: Path | None = None
        context = ContainerContext(
            namespace=self.namespace,
            pod=self.name,
            pod_ip=pod_ip,
            restart_policy=pod["spec"].get("restartPolicy", "Always"),
            runtime_dir=deps.runtime_dir,
            pod_dir=self.dir,
            prepare=self._prepare,
            on_change=self._dirty.set,
            node_up=self.node_up,
            http=deps.http,
            backoff=deps.backoff,
            grace_seconds=lambda: float(grace_period_seconds(self.pod)),
        )
        spec = pod["spec"]
        self.init_containers = [
            ContainerRunner(context, c, init=True) for c in spec.get("initContainers") or []
        ]
        self.containers = [ContainerRunner(context, c, init=False) for c in spec["containers"]]

    # -- events from the runtime ----------------------------------------------

    def update(self, pod: Pod) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self._deleting.set()

    def deleted(self) -> None:
        """The object is gone (force-deleted): stop the processes, write nothing."""
        self._gone = True
        self._deleting.set()

    async def set_node_up(self, up: bool) -> None:
        """A node that goes down loses its processes; they come back with the node."""
        if up:
            self.node_up.set()
            self._dirty.set()
            return
        self.node_up.clear()
        await asyncio.gather(*(c.kill_now() for c in self._all()))

    def _all(self) -> list[ContainerRunner]:
        return [*self.init_containers, *self.containers]

    # -- lifecycle --------------------------------------------------------------

    async def run(self, on_done: Callable[[], Awaitable[None]]) -> None:
        """Run until the pod is deleted; then stop the processes and finish the deletion."""
        status_loop = asyncio.create_task(self._status_loop())
        self._dirty.set()
        containers = asyncio.create_task(self._run_containers())
        try:
            await self._deleting.wait()
            if not self._gone:
                await self.node_up.wait()  # a lost node's kubelet cannot confirm deletions
            grace = 0 if self._gone else grace_period_seconds(self.pod)
            await asyncio.gather(*(c.stop(grace) for c in self._all()))
            await containers
            if not self._gone:
                await self._flush_status()
                await self._finish_deletion()
        finally:
            status_loop.cancel()
            containers.cancel()
            await asyncio.gather(status_loop, containers, return_exceptions=True)
            await on_done()

    async def shutdown(self, grace: float) -> None:
        """The runtime is exiting: stop processes, leave the API object alone."""
        self._gone = True
        await asyncio.gather(*(c.stop(grace) for c in self._all()))

    async def _run_containers(self) -> None:
        for runner in self.init_containers:
            await runner.run()
            if not runner.succeeded:
                return
        await asyncio.gather(*(runner.run() for runner in self.containers))

    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    async def _finish_deletion(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            await self.deps.api.delete(self._path(), body)
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("deleting %s/%s: %s", self.namespace, self.name, error)

    # -- containers' environment -------------------------------------------------

    async def _prepare(self, container: Container) -> Launch:
        host_ip = self.deps.node_ip(self.pod["spec"]["nodeName"])
        declared = await container_env(self.deps.api, self.pod, container, self.pod_ip, host_ip)
        env = base_env(self.deps.bin_dir) | self._with_volumes(container, declared)
        env[ENV_BIND_HOST] = self.pod_ip
        env[ENV_TERMINATION_LOG] = str(self.dir / f"{container['name']}.termination-log")
        env["KUBECONFIG"] = str(await self._pod_kubeconfig())
        argv = container_argv(container, declared)
        argv[0] = resolve_executable(argv[0], self.deps.bin_dir, env["PATH"])
        return Launch(argv=argv, env=env, cwd=self._working_dir(container))

    def _with_volumes(self, container: Container, declared: dict[str, str]) -> dict[str, str]:
        """emptyDir volumes become folders of the pod here; env paths into them
        follow, and a HOME that exists only in the image gets a folder too
        (vLLM and its libraries write caches under it)."""
        mounts: dict[str, Path] = {}
        for mount_path, volume in emptydir_mounts(self.pod, container).items():
            folder = self.dir / "volumes" / volume
            folder.mkdir(parents=True, exist_ok=True)
            mounts[mount_path] = folder
        env = redirect_paths(declared, mounts)
        home = env.get("HOME")
        if home is not None and not Path(home).is_dir():
            folder = self.dir / f"{container['name']}.home"
            folder.mkdir(exist_ok=True)
            env["HOME"] = str(folder)
        return env

    def _working_dir(self, container: Container) -> Path:
        # The image's filesystem does not exist here: a workingDir that is not
        # a real folder on this machine becomes a per-container scratch folder.
        declared = container.get("workingDir")
        if declared and Path(declared).is_dir():
            return Path(declared)
        scratch = self.dir / f"{container['name']}.cwd"
        scratch.mkdir(exist_ok=True)
        return scratch

    async def _pod_kubeconfig(self) -> Path:
        """A kubeconfig with a bound token of the pod's ServiceAccount (TokenRequest).

        Raises ConfigError when the token cannot be issued.
        """
        if self._kubeconfig is not None:
            return self._kubeconfig
        spec = self.pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        token: str | None = None
        if spec.get("automountServiceAccountToken", True):
            request = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": _TOKEN_SECONDS,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                       "name": self.name, "uid": self.uid},
                },
            }  # fmt: skip
            path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token"
            try:
                token = (await self.deps.api.post(path, request))["status"]["token"]
            except ApiError as error:
                raise ConfigError(f"token for serviceaccount {account!r}: {error}") from error
        config = build_kubeconfig(
            self.deps.server,
            self.deps.ca_file,
            user=f"system:serviceaccount:{self.namespace}:{account}",
            token=token,
            namespace=self.namespace,
        )
        self._kubeconfig = write_kubeconfig(self.dir / "kubeconfig", config)
        return self._kubeconfig

    # -- status -------------------------------------------------------------------

    def build_status(self) -> dict[str, Any]:
        def view(c: ContainerRunner) -> ContainerView:
            return ContainerView(
                ever_started=c.container_id != "",
                running="running" in c.state,
                ready=c.ready,
                finished=c.finished,
                succeeded=c.succeeded,
            )

        init = [view(c) for c in self.init_containers]
        main = [view(c) for c in self.containers]
        initialized = all(c.finished and c.succeeded for c in init)
        containers_ready = bool(main) and all(c.ready and c.running for c in main)
        conditions = self._conditions.build(
            {
                "PodReadyToStartContainers": True,
                "Initialized": initialized,
                "ContainersReady": containers_ready,
                "Ready": containers_ready and readiness_gates_pass(self.pod),
            },
            {
                "Initialized": "ContainersNotInitialized",
                "ContainersReady": "ContainersNotReady",
                "Ready": "ContainersNotReady",
            },
        )
        host_ip = self.deps.node_ip(self.pod["spec"]["nodeName"])
        status: dict[str, Any] = {
            "phase": pod_phase(init, main),
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self._start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        return status

    async def _status_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._gone or not self.node_up.is_set():
                continue
            try:
                await self._flush_status()
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                log.warning("status of %s/%s: %s", self.namespace, self.name, error)
                self._dirty.set()
                await asyncio.sleep(0.5)  # back off before the retry

    async def _flush_status(self) -> None:
        status = self.build_status()
        if status == self._last_sent:
            return
        path = self._path() + "/status"
        try:
            await self.deps.api.patch(path, {"status": status})
        except ApiError as error:
            if error.status == 404:
                self._gone = True
                return
            raise
        self._last_sent = status
