"""The router process: wiring, endpoints and lifecycle (no globals).

`Router` owns everything one process needs: the pool, the retry budget,
counters, the access log, the health monitor and the listening sockets.
Tests start it in-process (`start` with port 0, `stop`); `main` runs it
until SIGTERM, then drains: readiness fails, the listener closes, requests
in flight finish (up to ``--drain-seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from typing import Any

import aiohttp
from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.router import metrics
from kubeinfer.router.accesslog import AccessLog
from kubeinfer.router.budget import RetryBudget
from kubeinfer.router.config import Settings
from kubeinfer.router.health import HealthMonitor
from kubeinfer.router.models import proxy_models
from kubeinfer.router.payload import BadRequestError, Inference, parse_inference
from kubeinfer.router.pool import BackendState, Pool
from kubeinfer.router.proxy import Ctx, proxy_inference
from kubeinfer.router.server import ClientConnection, Handler, Request
from kubeinfer.router.stats import merge_snapshots, render_debug

log = logging.getLogger("kubeinfer.router")

_INFERENCE_PATHS = {b"/v1/completions": False, b"/v1/chat/completions": True}
_GET_PATHS = frozenset({b"/healthz", b"/readyz", b"/v1/models", b"/metrics", b"/debug/backends"})
# Endpoints polled by kubelet and Prometheus stay out of the access log.
# With an API key, these need `Authorization: Bearer <key>`; probes and
# metrics stay open (kubelet and Prometheus have no key).
_PROTECTED = frozenset({*_INFERENCE_PATHS, b"/v1/models"})
_PATH_JSON = {p: json.dumps(p.decode()) for p in _INFERENCE_PATHS}
_js = json.dumps
_QUIET_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics", b"/internal/snapshot"})


class InternalConnection(ClientConnection):
    """A connection on the per-process control socket (``--processes N``)."""

    internal = True


class Router(Handler):
    loop: asyncio.AbstractEventLoop  # set by start()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes
        self._bearer = (b"Bearer " + settings.api_key.encode()) if settings.api_key else None
        self.draining = False
        self.pool = Pool(idle_timeout=settings.upstream_idle_timeout,
                         stats_window=settings.stats_window)
        self.budget = RetryBudget(settings.retry_budget_ratio,
                                  settings.retry_budget_min_per_second)
        self.counters: dict[str, dict[str, int]] = {
            "responses": {}, "retries": {}, "retriesDenied": {}, "ejections": {},
            "tableUpdates": {},
        }
        self.access = AccessLog.open(settings.access_log)
        self.health = HealthMonitor(self)
        self.connections: set[ClientConnection] = set()
        self.started = time.monotonic()
        self.started_wall = int(time.time())
        self.models_body = b""
        self.servers: list[asyncio.AbstractServer] = []
        self.port = settings.port
        self._siblings: dict[int, aiohttp.ClientSession] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._drained = asyncio.Event()

    # -- Handler --------------------------------------------------------------

    def clock(self) -> float:
        return time.monotonic()

    def _authorized(self, req: Request) -> bool:
        assert self._bearer is not None
        return req.authorization is not None and hmac.compare_digest(req.authorization,
                                                                     self._bearer)

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self.draining:
            self.request_done(conn)

    def request_done(self, conn: ClientConnection) -> None:
        if self.draining and not any(c.busy for c in self.connections):
            self._drained.set()

    def dispatch(self, conn: ClientConnection, req: Request) -> asyncio.Task[None] | None:
        path = req.path
        if self._bearer is not None and path in _PROTECTED and not self._authorized(req):
            self._plain(conn, req, 401, "Missing or wrong API key: send "
                                        "`Authorization: Bearer <key>`.")
            return None
        if req.method == b"POST":
            chat = _INFERENCE_PATHS.get(path)
            if chat is None:
                self._plain(conn, req, 405 if path in _GET_PATHS else 404)
                return None
            table = self.pool.table
            if table is None:
                self._plain(conn, req, 503, "No routing table has been loaded yet.")
                return None
            try:
                inf = parse_inference(req.body, chat=chat)
            except BadRequestError as exc:
                self._plain(conn, req, 400, exc.message, exc.param)
                return None
            if inf.model != table.model:
                self._plain(conn, req, 404, f"The model `{inf.model}` does not exist. "
                                            f"Valid models: {table.model}.", "model")
                return None
            # The loop is cached: asyncio.get_running_loop() costs a getpid()
            # system call, and this is the per-request path.
            task = self.loop.create_task(proxy_inference(self, conn, req, inf, table))
            task.add_done_callback(conn.task_done)
            return task
        if req.method == b"GET":
            if path == b"/healthz":
                conn.respond(200, b'{"status":"ok"}')
            elif path == b"/readyz":
                self._ready(conn)
            elif path == b"/v1/models":
                table = self.pool.table
                if table is None:
                    self._plain(conn, req, 503, "No routing table has been loaded yet.")
                    return None
                task = self.loop.create_task(proxy_models(self, conn, req, table))
                task.add_done_callback(conn.task_done)
                return task
            elif path in (b"/metrics", b"/debug/backends"):
                if self.settings.processes > 1:
                    task = self.loop.create_task(self._pod_view(conn, path))
                    task.add_done_callback(conn.task_done)
                    return task
                self._answer_view(conn, path, self.snapshot())
            elif path == b"/internal/snapshot" and getattr(conn, "internal", False):
                conn.respond(200, json.dumps(self.snapshot()).encode())
            else:
                self._plain(conn, req, 405 if path in _INFERENCE_PATHS else 404)
                return None
            return None
        self._plain(conn, req, 405)
        return None

    # -- endpoints ------------------------------------------------------------

    def _plain(self, conn: ClientConnection, req: Request, status: int, message: str = "",
               param: str | None = None) -> None:
        if not message:
            message = ("Method not allowed." if status == 405
                       else f"No route for {req.path.decode('latin-1')}.")
        conn.respond_error(status, message, param=param)
        self.count("responses", str(status))
        self.log_request(req, status, message)

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.pool.table is None:
            return False, "no routing table loaded"
        if self.pool.available_count() == 0 and self.pool.hold_seconds == 0:
            # With a hold (autoscaling) the router takes requests and keeps
            # them until a worker is ready: it must stay in the Service.
            return False, "no healthy backend"
        return True, "ok"

    def _ready(self, conn: ClientConnection) -> None:
        ok, reason = self.ready()
        body = json.dumps({"ready": ok, "reason": reason,
                           "healthyBackends": self.pool.available_count()}).encode()
        conn.respond(200 if ok else 503, body)

    def _answer_view(self, conn: ClientConnection, path: bytes, snap: dict[str, Any]) -> None:
        if path == b"/metrics":
            conn.respond(200, metrics.render(snap), metrics.CONTENT_TYPE)
        else:
            conn.respond(200, render_debug(snap).model_dump_json(by_alias=True).encode())

    async def _pod_view(self, conn: ClientConnection, path: bytes) -> None:
        snap = await self.pod_snapshot()
        self._answer_view(conn, path, snap)

    def snapshot(self) -> dict[str, Any]:
        snap = self.pool.snapshot(time.monotonic(), self.started)
        snap["counters"] = {k: dict(v) for k, v in self.counters.items()}
        return snap

    async def pod_snapshot(self) -> dict[str, Any]:
        """This process's snapshot merged with its siblings' (``--processes N``)."""
        snaps = [self.snapshot()]
        control = self.settings.control_dir
        if control is None or self.settings.processes <= 1:
            return snaps[0]
        me = self.settings.worker_index
        others = [i for i in range(self.settings.processes) if i != me]
        results = await asyncio.gather(*(self._sibling(i, control) for i in others),
                                       return_exceptions=True)
        for i, res in zip(others, results, strict=True):
            if isinstance(res, dict):
                snaps.append(res)
            else:
                log.warning("no stats from router process %d: %r", i, res)
        return merge_snapshots(snaps)

    async def _sibling(self, index: int, control: str) -> dict[str, Any]:
        session = self._siblings.get(index)
        if session is None:
            path = os.path.join(control, f"worker-{index}.sock")
            session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path))
            self._siblings[index] = session
        async with session.get("http://router/internal/snapshot",
                               timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
            data: dict[str, Any] = await resp.json()
            return data

    # -- accounting -----------------------------------------------------------

    def count(self, group: str, key: str, n: int = 1) -> None:
        bucket = self.counters[group]
        bucket[key] = bucket.get(key, 0) + n

    def attempt_done(self, b: BackendState, status: str, error: bool,
                     latency: float | None, ttft: float | None) -> None:
        """Book one attempt on ``b``; failures feed passive ejection."""
        now = time.monotonic()
        self.pool.record_attempt(b, status, error, latency, ttft, now)
        if status == "cancelled":
            return  # the client left: says nothing about the backend
        if not error:
            b.record_success()
            return
        if b.record_failure(now, self.settings.ejection):
            self.count("ejections", f"{b.name}|{status}")
            log.warning("backend %s ejected for %.1fs after failures (last: %s)", b.name,
                        b.ejected_until - now, status)

    def finish(self, req: Request, inf: Inference, ctx: Ctx) -> None:
        self.count("responses", str(ctx.status))
        if self.access.enabled:
            # Hand-formatted: json.dumps of a dict per request costs more than
            # the rest of the bookkeeping. Free text goes through _js.
            b = ctx.backend
            now = time.monotonic()
            ttft = "null" if ctx.ttft is None else f"{ctx.ttft * 1000.0:.3f}"
            rid = "null" if req.request_id is None else _js(req.request_id.decode("latin-1"))
            err = "null" if ctx.error is None else _js(ctx.error)
            self.access.write_line(
                f'"method":"POST","path":{_PATH_JSON[req.path]},"status":{ctx.status},'
                f'"model":{_js(inf.model)},"stream":{"true" if inf.stream else "false"},'
                f'"backend":{b.name_json if b else "null"},'
                f'"revision":{b.revision_json if b else "null"},"retries":{ctx.retries},'
                f'"latencyMs":{(now - req.started) * 1000.0:.3f},"ttftMs":{ttft},'
                f'"queueMs":{ctx.queued * 1000.0:.3f},"requestId":{rid},"error":{err}'
            )

    def log_request(self, req: Request, status: int, error: str | None, *,
                    backend: str | None = None) -> None:
        """The access log line of a request that is not an inference."""
        if not self.access.enabled or req.path in _QUIET_PATHS:
            return
        self.access.write({
            "method": req.method.decode("latin-1"),
            "path": req.path.decode("latin-1"),
            "status": status,
            "backend": backend,
            "latencyMs": round((time.monotonic() - req.started) * 1000.0, 3),
            "requestId": req.request_id.decode("latin-1") if req.request_id else None,
            "error": error,
        })

    # -- routing table --------------------------------------------------------

    def apply_table(self, table: RoutingTable, where: str) -> None:
        added, removed = self.pool.apply(table)
        self.models_body = json.dumps({
            "object": "list",
            "data": [{"id": table.model, "object": "model", "created": self.started_wall,
                      "owned_by": "kubeinfer", "root": table.model, "parent": None}],
        }).encode()
        self.count("tableUpdates", "ok")
        log.info("routing table generation %d from %s: %d backends (+%d -%d), strategy %s, "
                 "revision weights %s", table.generation, where, len(table.backends),
                 len(added), len(removed), table.strategy.value,
                 table.revision_weights or "shared")
        self.health.reconcile()

    def reject_table(self, where: str, message: str) -> None:
        self.count("tableUpdates", "error")
        log.error("ignoring routing table from %s (keeping generation %s): %s", where,
                  self.pool.table.generation if self.pool.table else "none", message)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> int:
        """Listen and start background work; returns the bound TCP port."""
        self.loop = loop = asyncio.get_running_loop()
        s = self.settings
        server = await loop.create_server(
            lambda: ClientConnection(self), s.host, s.port, backlog=4096,
            reuse_port=s.processes > 1 or None, reuse_address=True,
        )
        self.servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if s.control_dir is not None and s.worker_index is not None:
            path = os.path.join(s.control_dir, f"worker-{s.worker_index}.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.servers.append(await loop.create_unix_server(
                lambda: InternalConnection(self), path))
        await self.health.start()
        self.spawn(self._cut_slow_clients(), "cut-slow-clients")
        return self.port

    async def _cut_slow_clients(self) -> None:
        """Close connections that took longer than the read timeout to send a
        whole request: one sweep instead of a timer per request keeps the
        per-request path free of timer bookkeeping."""
        limit = self.settings.request_read_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            cutoff = time.monotonic() - limit
            for conn in list(self.connections):
                since = conn.idle_since
                if since is not None and since < cutoff:
                    conn.read_timed_out()

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop taking requests, let those in flight finish, release everything."""
        self.draining = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        if any(c.busy for c in self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.settings.drain_seconds
                                       if drain_seconds is None else drain_seconds)
        for conn in list(self.connections):
            conn.abort()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.health.stop()
        for session in self._siblings.values():
            await session.close()
        for b in self.pool.backends.values():
            b.conns.close_idle()
        self.access.flush()
