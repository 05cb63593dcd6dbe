"""HTTP/1.1 to the workers: pooled keep-alive connections, one exchange each.

This is the hot path, so it is a plain asyncio protocol with llhttp
(httptools) parsing instead of aiohttp's client: a request is two writes
of bytes the router already has (the head it built and the client's
original body, never re-serialised) and the response arrives through
parser callbacks. For streaming, each body chunk goes straight from the
worker's socket callback to the client's socket (`Exchange.stream`), with
no task switch per chunk, and the worker socket stops being read while
the client's buffer is full.

Progress (any response byte) is stamped per backend for stall detection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import cast

import httptools

# vLLM marks a stream cut short by SIGTERM or an engine abort this way.
_ABORT_MARKERS = (b'"finish_reason":"abort"', b'"finish_reason": "abort"')
# vLLM's event when generation failed mid-stream (EngineDeadError after a
# SIGTERM killed its engine core, seen with 0.32), followed by [DONE]:
# `data: {"error": {"message", "type", "param", "code"}}`. Token text can't
# match: quotes inside a JSON string are escaped.
_ERROR_EVENT = b'data: {"error":'
# The last event of every complete OpenAI stream. A stream that ends
# without it was cut, however cleanly the HTTP body ended.
DONE_MARKER = b"data: [DONE]"
_TAIL = 32  # longer than every marker, so one split across two reads is still seen


class UpstreamError(Exception):
    """An attempt failed in transport: nothing usable came back.

    ``kind`` is ``connect`` (could not connect), ``reset`` (connection lost),
    ``stall`` (no progress for the stall timeout), ``protocol`` (malformed
    response). ``responded`` says whether any response byte had arrived.
    """

    def __init__(self, kind: str, detail: str = "", responded: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.responded = responded


class Exchange:
    """One request and its response on one connection."""

    __slots__ = (
        "_done",
        "_fut",
        "_tail",
        "aborted_stream",
        "body",
        "complete",
        "conn",
        "error",
        "error_event",
        "first_body_at",
        "headers",
        "headers_at",
        "on_first_body",
        "pool",
        "sink",
        "started",
        "status",
        "stream_mode",
    )

    def __init__(self, pool: UpstreamPool, conn: UpstreamConnection, stream_mode: bool,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.conn = conn
        self.stream_mode = stream_mode
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.sink: Callable[[bytes], None] | None = None
        self.complete = False
        self.error: UpstreamError | None = None
        self.aborted_stream = False
        self.error_event = False
        self._tail = b""
        self.started = time.monotonic()
        self.headers_at: float | None = None
        self.first_body_at: float | None = None
        self.on_first_body: Callable[[], None] | None = None
        self._fut: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] | None = None

    def after_first_body(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the first body byte has arrived: now if it has."""
        if self.first_body_at is not None:
            callback()
        else:
            self.on_first_body = callback

    # -- parser events --------------------------------------------------------

    def on_headers(self, status: int) -> None:
        now = time.monotonic()
        self.status = status
        self.headers_at = now
        self.pool.last_progress = now
        if self.stream_mode and not self._fut.done():
            self._fut.set_result(None)

    def on_body(self, data: bytes) -> None:
        now = time.monotonic()
        self.pool.last_progress = now
        if self.first_body_at is None:
            self.first_body_at = now
            first = self.on_first_body
            if first is not None:
                self.on_first_body = None
                first()
        tail = self._tail
        if b"abort" in data or (tail and b"abort" in tail + data[:_TAIL]):
            probe = tail + data
            if _ABORT_MARKERS[0] in probe or _ABORT_MARKERS[1] in probe:
                self.aborted_stream = True
        if ((b'"error"' in data or (tail and b'"error"' in tail + data[:_TAIL]))
                and _ERROR_EVENT in tail + data):
            self.error_event = True
        # The tail spans reads: a worker may send "[DONE]" in pieces.
        self._tail = data[-_TAIL:] if len(data) >= _TAIL else (tail + data)[-_TAIL:]
        sink = self.sink
        if sink is not None:
            sink(data)
        else:
            self.body.append(data)

    @property
    def ended_with_done(self) -> bool:
        """The body so far ends with the SSE ``data: [DONE]`` event."""
        return DONE_MARKER in self._tail

    def on_complete(self) -> None:
        self.complete = True
        self.pool.active.discard(self)
        if not self._fut.done():
            self._fut.set_result(None)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def fail(self, error: UpstreamError) -> None:
        """The connection died or the stall detector gave up on this attempt."""
        if self.complete or self.error is not None:
            return
        self.error = error
        self.pool.active.discard(self)
        if not self._fut.done():
            self._fut.set_exception(error)
        elif self._done is not None and not self._done.done():
            self._done.set_exception(error)

    # -- used by the proxy ----------------------------------------------------

    def response(self) -> asyncio.Future[None]:
        """Resolves at the response head (stream mode) or its end (buffer mode)."""
        return self._fut

    def stream(self, sink: Callable[[bytes], None]) -> asyncio.Future[None]:
        """Send the body to ``sink`` as it arrives; resolves when it has all come."""
        for chunk in self.body:
            sink(chunk)
        self.body = []
        self.sink = sink
        self._done = done = self._fut.get_loop().create_future()
        if self.error is not None:
            done.set_exception(self.error)
        elif self.complete:
            done.set_result(None)
        return done

    def read_rest(self) -> asyncio.Future[None]:
        """In stream mode, wait for the rest of a body that will be buffered."""
        self._done = done = self._fut.get_loop().create_future()
        if self.error is not None:
            done.set_exception(self.error)
        elif self.complete:
            done.set_result(None)
        return done

    def abandon(self) -> None:
        """Stop caring about an unfinished exchange; its connection can't be reused."""
        if not self.complete:
            self.pool.active.discard(self)
            self.conn.abort()
            for fut in (self._fut, self._done):
                if fut is not None and fut.done() and not fut.cancelled():
                    fut.exception()  # mark retrieved

    def pause(self) -> None:
        self.conn.pause_reading()

    def resume(self) -> None:
        self.conn.resume_reading()


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive TCP connection to a worker."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.reused = False
        self.closed = False
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            responded = ex.headers_at is not None
            ex.fail(UpstreamError("reset", str(exc or "connection closed by the worker"),
                                  responded=responded))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            # Bytes nobody asked for: the connection is out of step.
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            ex = self.exchange
            if ex is not None:
                self.exchange = None
                ex.fail(UpstreamError("protocol", str(exc), responded=ex.headers_at is not None))
            self.abort()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_headers(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_body(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        self.exchange = None
        keep = self.parser.should_keep_alive()
        if self._paused:
            self.resume_reading()
        if ex is not None:
            ex.on_complete()
        if keep and not self.closed:
            self.pool.put_idle(self)
        else:
            self.abort()

    # used by the pool and the exchange
    def start(self, ex: Exchange, head: bytes, body: bytes) -> None:
        self.exchange = ex
        t = self.transport
        assert t is not None
        if len(body) < 65536:
            t.write(head + body)
        else:
            t.writelines((head, body))

    def abort(self) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()


class UpstreamPool:
    """Idle connections to one worker (newest first) and its exchanges in flight.

    Idle connections older than ``idle_timeout`` are not reused: vLLM
    (uvicorn) closes keep-alive connections after 5 s idle, and reusing one
    just as it closes fails the request for nothing.
    """

    def __init__(self, host: str, port: int, *, idle_timeout: float = 4.0,
                 max_idle: int = 1024, tls: bool = False) -> None:
        self.host = host
        self.port = port
        # https:// backends: verified TLS with the system's CA bundle.
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []
        self.active: set[Exchange] = set()
        self.last_progress = time.monotonic()
        self.retired = False  # the backend left the routing table

    def put_idle(self, conn: UpstreamConnection) -> None:
        if self.retired or len(self.idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        conn.reused = True
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        if not idle:
            return None
        limit = time.monotonic() - self.idle_timeout
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.idle_since < limit:
                # Everything below is older still.
                conn.abort()
                for old in idle:
                    old.abort()
                idle.clear()
                return None
            return conn
        return None

    def sweep(self) -> None:
        """Close idle connections past their keep-alive time."""
        limit = time.monotonic() - self.idle_timeout
        stale = [c for c in self.idle if c.idle_since < limit]
        for c in stale:
            c.abort()

    def close_idle(self, *, retire: bool = False) -> None:
        """Close idle connections; ``retire``: and those that become idle later."""
        self.retired = self.retired or retire
        for c in list(self.idle):
            c.abort()
        self.idle.clear()

    def fail_active(self, error: UpstreamError) -> int:
        """Fail every exchange in flight (stall); returns how many."""
        victims = list(self.active)
        for ex in victims:
            ex.fail(error)
            ex.conn.abort()
        return len(victims)

    async def connect(self, limit: float, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        try:
            async with asyncio.timeout(limit):
                _, proto = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise UpstreamError("connect", f"timed out after {limit:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("connect", getattr(exc, "strerror", None) or str(exc)) from None
        return proto

    async def send(self, head: bytes, body: bytes, *, stream_mode: bool,
                   connect_timeout: float, loop: asyncio.AbstractEventLoop) -> Exchange:
        """Send one request; returns once the head (stream mode) or all of the
        response (buffer mode) is in. Raises `UpstreamError`.

        A reused connection that dies before any response byte is retried once
        on a new connection: the worker closed it while idle, which says
        nothing about the worker's health.
        """
        if not self.active:
            # The stall clock starts when the backend gets work.
            self.last_progress = time.monotonic()
        conn = self.take_idle()
        if conn is not None:
            ex = Exchange(self, conn, stream_mode, loop)
            self.active.add(ex)
            conn.start(ex, head, body)
            try:
                await ex.response()
                return ex
            except UpstreamError as err:
                if err.responded or err.kind != "reset":
                    raise
            except BaseException:
                ex.abandon()
                raise
        conn = await self.connect(connect_timeout, loop)
        ex = Exchange(self, conn, stream_mode, loop)
        self.active.add(ex)
        conn.start(ex, head, body)
        try:
            await ex.response()
        except BaseException:
            ex.abandon()
            raise
        return ex
