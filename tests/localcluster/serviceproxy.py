"""A Service for the router pods, as kube-proxy would give one (test side).

Pod IPs here are loopback addresses, which Endpoints reject, and nothing
plays kube-proxy: a client that talks to one router pod's IP fails with
that pod. `ServiceProxy` is the missing piece for the chaos suite: a TCP
proxy on a loopback port that sends each new connection to one of the
Ready pods matching a label selector (round robin), and follows readiness
by polling the API server, as kube-proxy follows EndpointSlices.

Like kube-proxy's userspace mode it tries the next Ready pod when a
connect fails (nothing was sent yet, so nothing can be lost). A
connection already open to a pod that dies breaks, as it does in a
cluster: that is what the chaos figures count.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from kubeinfer.localcluster.client import KubeClient, KubeError

_COPY_CHUNK = 65536


def ready_pod_ips(pods: list[dict[str, Any]]) -> list[str]:
    """IPs of the pods that are Ready and not terminating (what an EndpointSlice serves)."""
    ips = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            cond["type"] == "Ready" and cond["status"] == "True"
            for cond in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            ips.append(str(status["podIP"]))
    return sorted(ips)


@dataclass
class ServiceProxy:
    kube: KubeClient
    namespace: str
    selector: str
    target_port: int
    poll_seconds: float = 0.3
    endpoints: list[str] = field(default_factory=list)
    port: int = 0
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _follow(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={self.selector}"
        while True:
            try:
                pods = (await asyncio.to_thread(self.kube.get, path))["items"]
            except (KubeError, OSError):
                # The API server is away (a chaos scenario): keep the last
                # endpoints, as kube-proxy keeps its rules.
                pass
            else:
                self.endpoints = ready_pod_ips(pods)
            await asyncio.sleep(self.poll_seconds)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        candidates = list(self.endpoints)
        if not candidates:
            return None
        start = next(self._turn)
        for i in range(len(candidates)):
            ip = candidates[(start + i) % len(candidates)]
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(ip, self.target_port)
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                writer.close()
                return
            up_reader, up_writer = upstream
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            # Only `running` cancels a connection (the proxy stops). asyncio's
            # stream server logs a handler that ends cancelled as an error.
            writer.close()
        finally:
            self._connections.discard(task)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ServiceProxy]:
        follower = asyncio.create_task(self._follow())
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            # Connections still open (idle keep-alive) end with the proxy.
            tasks = [follower, *self._connections]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_COPY_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        # One side is done: close the other, so a dead pod's connection
        # reaches the client as a broken connection, not a hang.
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
