"""The runtime's main loop: watch nodes and pods, run a PodRunner per pod of ours."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubeinfer.localcluster.runtime.container import Backoff
from kubeinfer.localcluster.runtime.ipam import allocate
from kubeinfer.localcluster.runtime.kubeapi import ApiError, Credentials, KubeApi
from kubeinfer.localcluster.runtime.pod import PodRunner, RuntimeDeps
from kubeinfer.localcluster.runtime.podspec import Pod, is_runtime_pod
from kubeinfer.localcluster.topology import (
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_ANNOTATION_VALUE,
    NODE_DOWN_ANNOTATION,
)

log = logging.getLogger(__name__)

_FINISHED_PHASES = ("Succeeded", "Failed")
# When the runtime itself stops (cluster down), pods get at most this long.
_SHUTDOWN_GRACE = 5.0


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    value = (obj["metadata"].get("annotations") or {}).get(key)
    return str(value) if value is not None else None


def _is_simulated(node: dict[str, Any]) -> bool:
    return _annotation(node, KWOK_NODE_ANNOTATION) == KWOK_NODE_ANNOTATION_VALUE


def _is_down(node: dict[str, Any]) -> bool:
    return _annotation(node, NODE_DOWN_ANNOTATION) == "true"


class Runtime:
    """Keeps one PodRunner per pod of ours bound to a simulated node."""

    def __init__(self, kubeconfig: Path, runtime_dir: Path, bin_dir: Path, backoff: Backoff):
        self.credentials = Credentials.from_kubeconfig(kubeconfig)
        self.runtime_dir = runtime_dir
        self.bin_dir = bin_dir
        self.backoff = backoff
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, Pod] = {}  # every pod on a simulated node, by uid
        self.runners: dict[str, PodRunner] = {}
        self.ips: dict[str, str] = {}  # pod IPs handed out by the runtime, by pod uid
        self._tasks: set[asyncio.Task[None]] = set()

    # -- main ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with KubeApi(self.credentials) as api, aiohttp.ClientSession() as http:
            self.deps = RuntimeDeps(
                api=api, http=http, runtime_dir=self.runtime_dir, bin_dir=self.bin_dir,
                server=self.credentials.server, ca_file=Path(self.credentials.ca_file),
                backoff=self.backoff, node_ip=self.node_ip,
            )  # fmt: skip
            nodes_rv = await self._relist(api, "/api/v1/nodes", self._on_node)
            pods_rv = await self._relist(api, "/api/v1/pods", self._on_pod)
            (self.runtime_dir / "ready").write_text("ok\n")
            watches = [
                asyncio.create_task(self._watch(api, "/api/v1/nodes", nodes_rv, self._on_node)),
                asyncio.create_task(self._watch(api, "/api/v1/pods", pods_rv, self._on_pod)),
            ]
            await stop.wait()
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await asyncio.gather(*(r.shutdown(_SHUTDOWN_GRACE) for r in self.runners.values()))

    async def _relist(
        self, api: KubeApi, path: str, handler: Callable[[str, dict[str, Any]], None]
    ) -> str:
        listed = await api.get(path)
        kind = listed["kind"].removesuffix("List")
        seen = set()
        for item in listed["items"]:
            item.setdefault("kind", kind)
            seen.add(item["metadata"]["uid"])
            handler("MODIFIED", item)
        # Objects deleted while we were not watching.
        known = self.pods
        if kind == "Node":
            known = {n["metadata"]["uid"]: n for n in self.nodes.values()}
        for uid, obj in list(known.items()):
            if uid not in seen:
                handler("DELETED", obj)
        return str(listed["metadata"]["resourceVersion"])

    async def _watch(
        self,
        api: KubeApi,
        path: str,
        resource_version: str,
        handler: Callable[[str, dict[str, Any]], None],
    ) -> None:
        while True:
            try:
                async for kind, obj in api.watch(path, resource_version):
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        handler(kind, obj)
            except ApiError as error:
                if error.status != 410:
                    log.warning("watch %s: %s", path, error)
                resource_version = await self._relist(api, path, handler)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("watch %s: %s; retrying", path, error)
                await asyncio.sleep(0.5)  # the apiserver may be restarting
            except Exception:
                # A bug must not silently stop the runtime from acting: log it
                # with its traceback and start over from a fresh list.
                log.exception("watch %s failed; listing again", path)
                await asyncio.sleep(1)
                resource_version = await self._relist(api, path, handler)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- nodes --------------------------------------------------------------------

    def node_ip(self, node_name: str) -> str:
        node = self.nodes.get(node_name)
        for address in (node or {}).get("status", {}).get("addresses") or []:
            if address["type"] == "InternalIP":
                return str(address["address"])
        return "127.0.0.1"

    def _on_node(self, kind: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if kind == "DELETED" or not _is_simulated(node):
            self.nodes.pop(name, None)
            return
        previous = self.nodes.get(name)
        self.nodes[name] = node
        if previous is not None and _is_down(previous) != _is_down(node):
            up = not _is_down(node)
            log.info("node %s is %s", name, "back up" if up else "down")
            for runner in self.runners.values():
                if runner.pod["spec"].get("nodeName") == name:
                    self._spawn(runner.set_node_up(up))

    # -- pods ---------------------------------------------------------------------

    def _on_pod(self, kind: str, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        node_name = pod["spec"].get("nodeName")
        if kind == "DELETED":
            self.pods.pop(uid, None)
            runner = self.runners.get(uid)
            if runner:
                runner.deleted()
            return
        if not node_name or node_name not in self.nodes:
            return
        self.pods[uid] = pod
        runner = self.runners.get(uid)
        if runner:
            runner.update(pod)
            return
        if not is_runtime_pod(pod):
            return
        if pod["metadata"].get("deletionTimestamp"):
            # Never started here (finished before a runtime restart, or deleted at
            # once): nothing to stop, but someone must confirm the deletion.
            self._spawn(self._confirm_deletion(pod))
        elif pod.get("status", {}).get("phase") not in _FINISHED_PHASES:
            self._start(pod, node_name)

    async def _confirm_deletion(self, pod: Pod) -> None:
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            await self.deps.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body
            )
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("deleting %s/%s: %s", meta["namespace"], meta["name"], error)

    def _start(self, pod: Pod, node_name: str) -> None:
        uid = pod["metadata"]["uid"]
        ip = pod.get("status", {}).get("podIP") or self._allocate(node_name)
        self.ips[uid] = ip
        runner = PodRunner(pod, ip, self.deps)
        self.runners[uid] = runner
        if _is_down(self.nodes[node_name]):
            runner.node_up.clear()
        runner.update(pod)

        async def done() -> None:
            self.runners.pop(uid, None)
            self.ips.pop(uid, None)

        self._spawn(runner.run(done))
        log.info("started %s/%s on %s at %s", runner.namespace, runner.name, node_name, ip)

    def _allocate(self, node_name: str) -> str:
        node = self.nodes[node_name]
        in_use = set(self.ips.values())
        for other in self.pods.values():
            if other["spec"].get("nodeName") == node_name:
                with contextlib.suppress(KeyError):
                    in_use.add(other["status"]["podIP"])
        return allocate(node["spec"]["podCIDR"], in_use)
