"""The benchmark's own line to the API server: admin REST calls and watches.

Asynchronous (aiohttp), so that the watches that timestamp every pod event
run next to the calls that inject failures without one delaying the other.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubeinfer.localcluster.certs import pki_paths

# A watch line holds one whole object; an InferenceService with its replica
# rows and a pod are a few KiB, the default 64 KiB line limit is too tight
# for comfort.
READ_BUFSIZE = 1 << 20
WatchHandler = Callable[[str, dict[str, Any]], None]


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


class Api:
    """Admin (system:masters) calls on plain dicts."""

    def __init__(self, server: str, pki_dir: Path) -> None:
        pki = pki_paths(pki_dir)
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        self.server = server
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=32),
            read_bufsize=READ_BUFSIZE,
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        """One call; the decoded answer. Raises ApiError on an error status."""
        data = json.dumps(body) if body is not None else None
        async with self._session.request(
            method,
            self.server + path,
            data=data,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as answer:
            text = await answer.text()
            if answer.status >= 400:
                raise ApiError(answer.status, text)
        return json.loads(text) if text[:1] in ("{", "[") else text

    async def create(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: Any) -> Any:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str, body: Any = None) -> Any:
        try:
            return await self.request("DELETE", path, body)
        except ApiError as error:
            if error.status != 404:
                raise
            return None

    async def watch(self, path: str, handle: WatchHandler, started: asyncio.Event) -> None:
        """Call handle(type, object) for every event of the collection at path,
        from its current contents on, until cancelled. Sets started once the
        current contents have been delivered (the first event or bookmark)."""
        resource_version = ""
        while True:
            query = "watch=1&allowWatchBookmarks=true&timeoutSeconds=1800"
            if resource_version:
                query += f"&resourceVersion={resource_version}"
            else:
                # Start from a fresh list so nothing before the watch is lost.
                listed = await self.request("GET", path)
                for item in listed["items"]:
                    handle("ADDED", item)
                resource_version = listed["metadata"]["resourceVersion"]
                started.set()
                continue
            async with self._session.get(
                f"{self.server}{path}?{query}",
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as stream:
                if stream.status == 410:  # expired: list again
                    resource_version = ""
                    continue
                if stream.status >= 400:
                    raise ApiError(stream.status, await stream.text())
                async for line in stream.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        resource_version = ""
                        break
                    resource_version = obj.get("metadata", {}).get(
                        "resourceVersion", resource_version
                    )
                    if event["type"] != "BOOKMARK":
                        handle(event["type"], obj)
