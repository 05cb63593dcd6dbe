"""Where routing tables come from: a file, or the operator's ConfigMap.

Both sources hand every good document to ``apply`` and every bad one to
``reject`` (which logs it); a bad document never replaces the last good
table and never stops the source.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from kubeinfer.operator.api.routing import ROUTES_CONFIGMAP_KEY, RoutingTable
from kubeinfer.router.config import TableError, load_table_file, parse_table

log = logging.getLogger("kubeinfer.router.sources")

Apply = Callable[[RoutingTable, str], None]
Reject = Callable[[str, str], None]


class FileSource:
    """Polls a file (mtime, size, inode) and reloads it when it changes.

    Polling rather than inotify: a ConfigMap mounted as a volume changes by
    an atomic symlink swap that inotify on the file itself misses.
    """

    def __init__(self, path: str, apply: Apply, reject: Reject, interval: float = 1.0) -> None:
        self.path = path
        self.apply = apply
        self.reject = reject
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self) -> bool:
        """Reload if the file changed; True when a new table was applied."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        if stamp is None:
            self.reject(f"file {self.path}", "the file is gone; keeping the last good table")
            return False
        try:
            table = load_table_file(self.path)
        except TableError as exc:
            self.reject(f"file {self.path}", str(exc))
            return False
        self.apply(table, f"file {self.path}")
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()


class ConfigMapSource:
    """Watches the ConfigMap the operator publishes (``<service>-routes``).

    List, then watch from the list's resourceVersion; when the watch expires
    (410 Gone) or the connection drops, list again. Uses the pod's service
    account in a cluster, else the kubeconfig named by ``KUBECONFIG``.
    """

    def __init__(self, namespace: str, name: str, apply: Apply, reject: Reject,
                 *, watch_timeout: int = 300, backoff_max: float = 10.0) -> None:
        self.namespace = namespace
        self.name = name
        self.apply = apply
        self.reject = reject
        self.watch_timeout = watch_timeout
        self.backoff_max = backoff_max
        self.where = f"configmap {namespace}/{name}"
        self._last_rv: str | None = None
        self.lists = 0

    async def _client(self) -> Any:
        from kubernetes_asyncio import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        cfg = client.Configuration()
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                      client_configuration=cfg)
        return client.ApiClient(configuration=cfg)

    def _handle(self, obj: Any) -> None:
        meta = obj.metadata
        rv = meta.resource_version if meta is not None else None
        if rv is not None and rv == self._last_rv:
            return
        self._last_rv = rv
        data = obj.data or {}
        text = data.get(ROUTES_CONFIGMAP_KEY)
        if text is None:
            self.reject(self.where, f"no key {ROUTES_CONFIGMAP_KEY!r} in the ConfigMap")
            return
        try:
            table = parse_table(text)
        except TableError as exc:
            self.reject(self.where, str(exc))
            return
        self.apply(table, self.where)

    async def run(self) -> None:
        from kubernetes_asyncio import client, watch
        from kubernetes_asyncio.client.exceptions import ApiException

        backoff = 0.5
        api_client = await self._client()
        try:
            v1 = client.CoreV1Api(api_client)
            selector = f"metadata.name={self.name}"
            while True:
                try:
                    listing = await v1.list_namespaced_config_map(
                        self.namespace, field_selector=selector)
                    self.lists += 1
                    if not listing.items:
                        log.warning("%s does not exist yet; waiting for it", self.where)
                    for item in listing.items:
                        self._handle(item)
                    w = watch.Watch()
                    async with w:
                        async for event in w.stream(
                            v1.list_namespaced_config_map, self.namespace,
                            field_selector=selector,
                            resource_version=listing.metadata.resource_version,
                            timeout_seconds=self.watch_timeout,
                        ):
                            kind = event["type"]
                            if kind in ("ADDED", "MODIFIED"):
                                self._handle(event["object"])
                            elif kind == "DELETED":
                                log.warning("%s was deleted; keeping the last good table",
                                            self.where)
                    backoff = 0.5
                except ApiException as exc:
                    if exc.status == 410:
                        log.info("watch of %s expired (410 Gone); listing again", self.where)
                        continue
                    log.warning("watching %s failed: %s %s; retrying in %.1fs", self.where,
                                exc.status, exc.reason, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    log.warning("watching %s failed: %r; retrying in %.1fs", self.where, exc,
                                backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
        finally:
            await api_client.close()
