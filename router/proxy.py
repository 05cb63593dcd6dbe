"""One client request: pick a backend, attempt, retry while nothing was sent.

Retries go to a backend not tried yet, only for failures that say nothing
about the request itself (connect errors, lost connections, stalls, 500,
502, 503, 504: vLLM answers input problems with 4xx, so a 500 is the
worker's fault, e.g. a dead engine or a broken canary), only while no response byte has
reached the client, at most ``retries`` times and within the retry budget.
Every failed attempt counts against its backend and revision even when a
retry then succeeds: that is how the canary analysis sees a bad canary
while clients see no error.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING

from kubeinfer.operator.api.routing import RoutingTable
from kubeinfer.operator.api.spec import Strategy
from kubeinfer.router.errors import error_body
from kubeinfer.router.outcome import FAILED_STREAM_STATUS, stream_outcome
from kubeinfer.router.payload import Inference, affinity_key, prefix_blocks
from kubeinfer.router.pool import (
    BackendState,
    NoBackendError,
    Pool,
    QueueFullError,
    QueueTimeoutError,
)
from kubeinfer.router.server import ClientConnection, Request
from kubeinfer.router.upstream import Exchange, UpstreamError

if TYPE_CHECKING:
    from kubeinfer.router.app import Router

# vLLM's answer once its engine core died; nothing reached the client, and
# another worker can serve the request (fixtures/vllm-0.32.0/engine_dead*).
ENGINE_DEAD_MARKER = b"EngineCore"
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# Response headers that belong to the worker's hop.
RESPONSE_SKIP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server",
})
JSON_HEADERS = b"content-type: application/json\r\n"
# What the client gets when every attempt failed in transport.
_TRANSPORT_STATUS = {"connect": 503, "reset": 502, "protocol": 502, "stall": 504}


class Ctx:
    """What happened to one client request (for the access log and metrics)."""

    __slots__ = ("backend", "committed", "error", "queued", "retries", "status", "ttft")

    def __init__(self) -> None:
        self.backend: BackendState | None = None
        self.committed = False
        self.error: str | None = None
        self.queued = 0.0
        self.retries = 0
        self.status = 0
        self.ttft: float | None = None


class Failure:
    """A failed attempt and the answer the client gets if it is the last one."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, headers: bytes, body: bytes, reason: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.reason = reason

    @classmethod
    def transport(cls, err: UpstreamError, b: BackendState) -> Failure:
        status = _TRANSPORT_STATUS.get(err.kind, 502)
        return cls(status, JSON_HEADERS,
                   error_body(status, f"Backend {b.name} failed: {err}"), err.kind)


def response_headers(ex: Exchange, b: BackendState) -> bytes:
    parts = [name + b": " + value + b"\r\n" for name, value in ex.headers
             if name.lower() not in RESPONSE_SKIP]
    parts.append(b.header_line)
    return b"".join(parts)


async def proxy_inference(r: Router, conn: ClientConnection, req: Request, inf: Inference,
                          table: RoutingTable) -> None:
    pool = r.pool
    key = None
    blocks: tuple[int, ...] = ()
    if table.strategy is Strategy.PREFIX_AFFINITY:
        key = affinity_key(inf, req.session_id, table.prefix_length)
    elif table.strategy is Strategy.PREFIX_SCORE:
        key = affinity_key(inf, req.session_id, table.prefix_length)
        blocks = prefix_blocks(inf)
    r.budget.deposit()
    pool.note_arrival()
    ctx = Ctx()
    loop = r.loop
    deadline = loop.call_later(table.request_timeout_seconds, conn.on_deadline)
    tried: list[str] = []
    failure: Failure | None = None
    try:
        while True:
            b, full = pool.pick(key, tried, blocks, id(ctx))
            if b is None and full:
                if pool.queue_length >= pool.queue_size:
                    _too_busy(conn, ctx, "All backends are busy and the wait queue is full.")
                    return
                waited = time.monotonic()
                try:
                    b = await pool.wait_for_slot(key, tried, table.queue_timeout_seconds,
                                                 blocks, id(ctx))
                except QueueFullError:
                    _too_busy(conn, ctx, "All backends are busy and the wait queue is full.")
                    return
                except QueueTimeoutError:
                    _too_busy(conn, ctx, f"All backends stayed busy for "
                                         f"{table.queue_timeout_seconds:g}s.")
                    return
                except NoBackendError:
                    b = None
                finally:
                    ctx.queued += time.monotonic() - waited
            if b is None and not full and failure is None and table.hold_seconds > 0:
                # No worker at all (scaled to zero, or all starting): hold the
                # request for one instead of failing it; the operator sees the
                # queue and scales up.
                b = await _hold(pool, key, blocks, tried, ctx, conn, table)
                if b is None:
                    return
            if b is None:
                if failure is not None:
                    _deliver(conn, ctx, failure)
                else:
                    ctx.status = 503
                    ctx.error = "no healthy backend"
                    conn.respond_error(503, f"No healthy backend for model {table.model!r}.",
                                       headers=b"retry-after: 1\r\n")
                return
            failure = await _attempt(r, conn, req, inf, b, ctx, table)
            if failure is None:
                return
            tried.append(b.name)
            if ctx.retries >= table.retries:
                _deliver(conn, ctx, failure)
                return
            if not r.budget.withdraw():
                r.count("retriesDenied", failure.reason)
                _deliver(conn, ctx, failure)
                return
            ctx.retries += 1
            r.count("retries", failure.reason)
    except asyncio.CancelledError:
        if conn.timed_out and not conn.closed:
            if ctx.committed:
                # The stream is cut: log it as the timeout it is, not as its 200 head.
                ctx.status = 504
                ctx.error = "request timeout: stream cut"
                conn.abort()
            else:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                ctx.status = 504
                ctx.error = "request timeout"
                conn.respond_error(504, f"The request did not complete within "
                                        f"{table.request_timeout_seconds:g}s.")
                return
        if not ctx.status or (ctx.committed and ctx.status == 200):
            ctx.status = 499  # client closed the connection (nginx's code), mid-stream too
        raise
    finally:
        deadline.cancel()
        r.finish(req, inf, ctx)


def _too_busy(conn: ClientConnection, ctx: Ctx, message: str,
              retry_after: int = 1) -> None:
    ctx.status = 429
    ctx.error = "queue"
    conn.respond_error(429, message, headers=b"retry-after: %d\r\n" % retry_after)


# Past the hold a worker is still starting: try again a little later.
HOLD_RETRY_AFTER_SECONDS = 10


async def _hold(pool: Pool, key: int | None, blocks: tuple[int, ...], tried: list[str],
                ctx: Ctx, conn: ClientConnection, table: RoutingTable) -> BackendState | None:
    """Wait up to ``table.hold_seconds`` for a worker; None when the client got a 429."""
    if pool.queue_length >= pool.queue_size:
        _too_busy(conn, ctx, "No worker is ready and the wait queue is full.",
                  HOLD_RETRY_AFTER_SECONDS)
        return None
    waited = time.monotonic()
    try:
        return await pool.wait_for_slot(key, tried, table.hold_seconds, blocks, id(ctx))
    except QueueFullError:
        _too_busy(conn, ctx, "No worker is ready and the wait queue is full.",
                  HOLD_RETRY_AFTER_SECONDS)
    except QueueTimeoutError:
        _too_busy(conn, ctx, f"No worker became ready within {table.hold_seconds:g}s "
                             "(scaling up from zero).", HOLD_RETRY_AFTER_SECONDS)
    except NoBackendError:
        _too_busy(conn, ctx, "No worker is ready.", HOLD_RETRY_AFTER_SECONDS)
    finally:
        ctx.queued += time.monotonic() - waited
    return None


def _deliver(conn: ClientConnection, ctx: Ctx, failure: Failure) -> None:
    ctx.status = failure.status
    ctx.error = failure.reason
    conn.respond_raw(failure.status, failure.headers, failure.body)


async def _attempt(r: Router, conn: ClientConnection, req: Request, inf: Inference,
                   b: BackendState, ctx: Ctx, table: RoutingTable) -> Failure | None:
    """One try on ``b`` (whose slot is reserved). None when the client got its answer."""
    ctx.backend = b
    body = req.body
    head = (b"POST " + b.base_path + req.target + b" HTTP/1.1\r\n" + b.host_line
            + req.forward_headers + b"content-length: %d\r\n\r\n" % len(body))
    t0 = time.monotonic()
    ex: Exchange | None = None
    b.running[id(ctx)] = t0
    try:
        try:
            ex = await b.conns.send(head, body, stream_mode=inf.stream,
                                    connect_timeout=table.connect_timeout_seconds, loop=r.loop)
            if id(ctx) in b.prefill:
                # Its prefill is behind it once the first byte is (prefix-score's load).
                ex.after_first_body(functools.partial(b.prefill_done, id(ctx)))
            if inf.stream and ex.status == 200:
                await _stream(r, conn, b, ex, ctx, t0)
                return None
            if inf.stream:
                await ex.read_rest()
        except UpstreamError as err:
            r.attempt_done(b, err.kind, True, None, None)
            return Failure.transport(err, b)
        body = ex.body[0] if len(ex.body) == 1 else b"".join(ex.body)
        status = ex.status
        now = time.monotonic()
        ttft = (ex.headers_at or now) - t0
        retry: str | None = None
        if status >= 500:
            error = True
            if status == 500 and ENGINE_DEAD_MARKER in body:
                retry = "engine-dead"
            elif status in RETRYABLE_STATUS:
                retry = f"status-{status}"
        elif ex.aborted_stream and status < 300:
            error = True
            retry = "abort"
        else:
            error = False
        r.attempt_done(b, "abort" if retry == "abort" else str(status), error, now - t0, ttft)
        headers = response_headers(ex, b)
        if retry is not None:
            return Failure(status, headers, body, retry)
        ctx.status = status
        ctx.ttft = ttft
        conn.respond_raw(status, headers, body)
        return None
    except asyncio.CancelledError:
        r.attempt_done(b, "timeout" if conn.timed_out else "cancelled", conn.timed_out,
                       None, None)
        raise
    finally:
        b.running.pop(id(ctx), None)
        r.pool.release(b, id(ctx))
        if ex is not None and not ex.complete:
            ex.abandon()


async def _stream(r: Router, conn: ClientConnection, b: BackendState, ex: Exchange, ctx: Ctx,
                  t0: float) -> None:
    """Pass an SSE stream through chunk by chunk; no retry once it started.

    How it ended decides whether the attempt failed (`stream_outcome`): a
    stream without ``data: [DONE]``, with ``finish_reason: "abort"`` or with
    an error event is a worker failure even though the client had a 200 head.
    """
    ctx.committed = True
    ctx.status = 200
    writer = conn.start_stream(200, response_headers(ex, b))
    conn.streaming = ex
    if conn.write_paused:
        ex.pause()
    broken: str | None = None
    try:
        await ex.stream(writer)
    except UpstreamError as err:
        broken = err.kind
    finally:
        conn.streaming = None
    now = time.monotonic()
    first = ex.first_body_at
    outcome = stream_outcome(broken=broken, aborted=ex.aborted_stream, done=ex.ended_with_done,
                             error_event=ex.error_event)
    ctx.ttft = ttft = (first - t0) if first is not None else None
    # A cut stream has no "until the last byte" latency worth a percentile.
    latency = None if broken is not None and outcome.failed else now - t0
    r.attempt_done(b, outcome.label, outcome.failed, latency, ttft)
    if outcome.failed:
        ctx.status = FAILED_STREAM_STATUS
        ctx.error = outcome.error
    if outcome.end_cleanly:
        conn.end_stream()
    else:
        conn.abort()
