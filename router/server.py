"""The client-facing HTTP/1.1 server: one protocol object per connection.

A plain asyncio protocol with llhttp (httptools), for the same reason as
`upstream`: aiohttp's server alone costs about as much CPU per request as
a whole Rust router. It parses, enforces the body limit while the body
arrives (413 before buffering a huge upload), answers malformed HTTP with
a JSON 400, runs one request at a time per connection (pipelined requests
wait their turn), and cancels the request's task when the client goes
away, which in turn closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools
from kubeinfer.router.errors import error_body

log = logging.getLogger("kubeinfer.router")

if TYPE_CHECKING:
    from kubeinfer.router.upstream import Exchange

# Request headers that belong to one hop and are not forwarded to the worker.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
    b"upgrade", b"host", b"content-length", b"expect", b"proxy-authorization",
})

_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
# llhttp itself has no limit on the request line and headers.
MAX_HEAD_BYTES = 64 * 1024
# How long a rejected client may go on sending before the connection is cut.
LINGER_SECONDS = 2.0


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


class Request:
    """A parsed request; ``forward_headers`` are ready to send to a worker."""

    __slots__ = ("authorization", "body", "forward_headers", "keep_alive", "method", "path",
                 "request_id", "session_id", "started", "target")

    def __init__(self, method: bytes, target: bytes, forward_headers: bytes, body: bytes,
                 keep_alive: bool, request_id: bytes | None, session_id: bytes | None,
                 started: float, authorization: bytes | None = None) -> None:
        self.method = method
        self.target = target
        q = target.find(b"?")
        self.path = target if q < 0 else target[:q]
        self.forward_headers = forward_headers
        self.body = body
        self.keep_alive = keep_alive
        self.request_id = request_id
        self.session_id = session_id
        self.started = started
        self.authorization = authorization


class Handler:
    """What the server calls; `kubeinfer.router.app.Router` implements it."""

    max_body_bytes: int
    draining: bool

    def dispatch(self, conn: ClientConnection, req: Request) -> asyncio.Task[None] | None:
        raise NotImplementedError

    def connection_opened(self, conn: ClientConnection) -> None:
        raise NotImplementedError

    def connection_closed(self, conn: ClientConnection) -> None:
        raise NotImplementedError

    def request_done(self, conn: ClientConnection) -> None:
        raise NotImplementedError

    def clock(self) -> float:
        raise NotImplementedError


class ClientConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.pending: deque[Request] = deque()
        self.streaming: Exchange | None = None
        self.write_paused = False
        self.timed_out = False
        self.close_after = False
        # A HEAD request gets the head of the answer only (RFC 9110 9.3.2).
        self.head_only = False
        # Whether the running request's response head went out.
        self.head_sent = False
        # When the connection last became idle (waiting for a whole request);
        # None while a request is being served. The router cuts connections
        # idle for longer than its request read timeout (slow clients).
        self.idle_since: float | None = None
        self._in_message = False
        # An error for bad input that arrived while a request was in flight.
        self._deferred_error: tuple[int, str] | None = None
        # Request being parsed.
        self._url = b""
        self._headers: list[bytes] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._request_id: bytes | None = None
        self._session_id: bytes | None = None
        self._rejected = False
        self._authorization: bytes | None = None
        self._expect_continue = False
        self._started = 0.0

    # -- asyncio --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.idle_since = self.handler.clock()
        self.handler.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.pending.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.handler.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported.")
        except httptools.HttpParserError as exc:
            if not self._rejected:
                self._reject(400, f"Malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.streaming is not None:
            self.streaming.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.streaming is not None:
            self.streaming.resume()

    # -- httptools callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0
        self._head_size = 0
        self._request_id = None
        self._session_id = None
        self._authorization = None
        self._expect_continue = False
        self._started = self.handler.clock()
        self._in_message = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES and not self._rejected:
            self._reject(431, "The request line and headers are larger than 64 KiB.")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._rejected:
            return
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            self._reject(431, "The request line and headers are larger than 64 KiB.")
            return
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"content-length":
                if value.strip().isdigit() and int(value) > self.handler.max_body_bytes:
                    self._too_large()
            elif lname == b"expect":
                self._expect_continue = value.strip().lower() == b"100-continue"
            return
        if lname == b"x-request-id":
            self._request_id = value
        elif lname == b"x-session-id":
            self._session_id = value
        elif lname == b"authorization":
            self._authorization = value
        self._headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        if self._rejected:
            return
        # curl and others wait for this before sending a large body.
        if self._expect_continue:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._size += len(body)
        if self._size > self.handler.max_body_bytes:
            self._too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._rejected:
            return
        self.idle_since = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(
            self.parser.get_method(), self._url, b"".join(self._headers), body,
            self.parser.should_keep_alive(), self._request_id, self._session_id, self._started,
            self._authorization,
        )
        self._body = []
        if self.busy:
            self.pending.append(req)
            if len(self.pending) > 16 and self.transport is not None:
                self.transport.pause_reading()
        else:
            self._run(req)

    # -- requests and responses -----------------------------------------------

    def _run(self, req: Request) -> None:
        self.busy = True
        self.timed_out = False
        self.head_sent = False
        self.head_only = req.method == b"HEAD"
        # Nothing after a HEAD's bodiless answer is worth the risk of a
        # client that reads one anyway.
        self.close_after = not req.keep_alive or self.head_only
        self.idle_since = None
        self.task = self.handler.dispatch(self, req)

    def _done(self) -> None:
        self.busy = False
        self.task = None
        self.streaming = None
        if self.close_after or self.handler.draining:
            self.close()
            if self.handler.draining:
                self.handler.request_done(self)
            return
        if self.pending:
            if self.transport is not None:
                self.transport.resume_reading()
            self._run(self.pending.popleft())
        elif self._deferred_error is not None:
            status, message = self._deferred_error
            self._deferred_error = None
            self.busy = True
            self.head_only = False
            self.close_after = True
            self.respond_error(status, message)
        else:
            self.idle_since = self.handler.clock()

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None:
            t.write(data)

    def respond(self, status: int, body: bytes, content_type: bytes = b"application/json",
                headers: bytes = b"") -> None:
        """Send a whole response and move on to the next request."""
        if self.close_after or self.handler.draining:
            headers += b"connection: close\r\n"
        self.head_sent = True
        self._write(
            status_line(status)
            + b"content-type: " + content_type + b"\r\ncontent-length: %d\r\n" % len(body)
            + headers + b"\r\n" + (b"" if self.head_only else body)
        )
        self._done()

    def respond_raw(self, status: int, headers: bytes, body: bytes) -> None:
        """Send a whole response whose headers (content-type included) are given."""
        if self.close_after or self.handler.draining:
            headers += b"connection: close\r\n"
        self.head_sent = True
        self._write(status_line(status) + headers + b"content-length: %d\r\n\r\n" % len(body)
                    + (b"" if self.head_only else body))
        self._done()

    def respond_error(self, status: int, message: str, *, param: str | None = None,
                      headers: bytes = b"") -> None:
        self.respond(status, error_body(status, message, param), headers=headers)

    def start_stream(self, status: int, headers: bytes) -> Callable[[bytes], None]:
        """Send the head of a chunked response; returns the chunk writer."""
        if self.close_after or self.handler.draining:
            headers += b"connection: close\r\n"
        self.head_sent = True
        self._write(status_line(status) + headers + b"transfer-encoding: chunked\r\n\r\n")
        return self.write_chunk

    def write_chunk(self, data: bytes) -> None:
        t = self.transport
        if t is not None and data:
            t.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self._write(b"0\r\n\r\n")
        self._done()

    def abort(self) -> None:
        """Cut the connection: the only honest end for a stream that broke."""
        self.close_after = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        t = self.transport
        if t is None:
            return
        if self._rejected and t.can_write_eof():
            # Lingering close (nginx's lingering_close): after an error the
            # client may still be sending; closing with unread data makes the
            # kernel send a reset that can destroy our answer before the
            # client reads it. Half-close, discard what still comes, and
            # give up on the client after a moment.
            t.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, t.abort)
            return
        t.close()

    def on_deadline(self) -> None:
        if self.task is not None and not self.task.done():
            self.timed_out = True
            self.task.cancel()

    def read_timed_out(self) -> None:
        """The client took too long to send a request: answer 408 if one had
        begun (the rest of the stream can't be trusted), else just close."""
        if self.busy or self.closed:
            return
        if self._in_message and not self._rejected:
            self._reject(408, "The request was not received in time.")
        else:
            self.close()

    def task_done(self, task: asyncio.Task[None]) -> None:
        """A request's task ended. A bug in it must still answer the client
        (500 if nothing was sent yet, else a cut connection: a half-sent
        answer can't be finished) and be logged, never leave it hanging."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("request task failed", exc_info=task.exception())
        if self.task is not task or self.closed:
            return
        if self.head_sent:
            self.abort()
            return
        self.close_after = True
        self.respond_error(500, "Internal error in the router; the request was not served.")

    def _too_large(self) -> None:
        self._reject(413, f"Request body is larger than the limit of "
                          f"{self.handler.max_body_bytes} bytes.")

    def _reject(self, status: int, message: str) -> None:
        """Answer and close: the rest of the stream can't be trusted."""
        self._rejected = True
        if self.busy:
            # Good requests read before are answered first (found by the
            # fuzz tests: bytes after a `connection: close` request used to
            # cut it). The error follows unless the client said it sends
            # nothing more; then the connection closes.
            if not self.close_after:
                self._deferred_error = (status, message)
            return
        self.close_after = True
        self.pending.clear()
        self.busy = True
        self.respond_error(status, message)
