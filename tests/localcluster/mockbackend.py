"""A fast stand-in for a vLLM worker, for the router's tests and benchmarks.

It speaks the part of vLLM's HTTP surface the router touches (recorded in
tests/fixtures/vllm-0.32.0/): completions and chat completions, with SSE
streaming, ``/health``, ``/v1/models`` and ``/metrics`` with
``vllm:num_requests_waiting``. It is *not* the simulated engine (that one
lives in the worker agent and models GPU service time); it exists to be so
cheap that a benchmark measures the router, not the backend:

- a raw asyncio protocol with pre-encoded replies and keep-alive;
- an optional service time (``--delay``) and a batch-slot limit
  (``--slots``): requests beyond the limit wait, like vLLM's waiting queue;
- failure modes that tests switch at run time with ``POST /_mock/mode``:
  ``hang`` (accept, never answer), ``engine-dead`` (vLLM's 500), ``abort``
  (streams end with ``finish_reason: "abort"``, as on SIGTERM), ``status``
  (answer a fixed status), ``close`` (drop the connection), ``cut`` (close
  the connection halfway through a stream, like a worker killed then),
  ``nodone`` (end a stream's body cleanly without ``data: [DONE]``),
  ``error-event`` (halfway, vLLM's error event for a dead engine, then
  ``[DONE]``).

Run one process with several ports: ``python -m kubeinfer.localcluster.mockbackend
--port 9001 --port 9002 --delay 0.01 --slots 4``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

ENGINE_DEAD_BODY = (
    b'{"error":{"message":"EngineCore encountered an issue. See stack trace (above) for the '
    b'root cause.","type":"InternalServerError","param":null,"code":500}}'
)
MODES = ("ok", "hang", "engine-dead", "abort", "status", "close", "cut", "nodone",
         "error-event")


@dataclass
class MockConfig:
    """How one mock backend behaves; tests change it live via /_mock/mode."""

    name: str = "mock"
    model: str = "tiny"
    delay: float = 0.0  # service time of a non-streaming request
    slots: int = 0  # concurrent requests served at once; 0 = unlimited
    chunks: int = 8  # SSE chunks per streamed answer (plus usage + [DONE])
    chunk_delay: float = 0.0
    mode: str = "ok"
    status: int = 503  # what `status` mode answers
    health: int = 200


@dataclass
class MockState:
    config: MockConfig
    running: int = 0
    waiting: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    requests: int = 0
    generation_tokens: int = 0
    busy_seconds: float = 0.0  # slot-seconds spent serving (GPU busy time)
    completion: bytes = b""
    chat: bytes = b""
    completion_chunks: list[bytes] = field(default_factory=list)
    chat_chunks: list[bytes] = field(default_factory=list)

    def encode(self) -> None:
        """Pre-encode every reply: the hot path only writes bytes."""
        c = self.config
        completion = {
            "id": f"cmpl-{c.name}",
            "object": "text_completion",
            "created": 1795322439,
            "model": c.model,
            "choices": [
                {"index": 0, "text": " hello" * 4, "logprobs": None, "finish_reason": "length",
                 "stop_reason": None}
            ],
            "usage": {"prompt_tokens": 3, "total_tokens": 11, "completion_tokens": 8},
        }
        chat = {
            "id": f"chatcmpl-{c.name}",
            "object": "chat.completion",
            "created": 1795322439,
            "model": c.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " hello" * 4},
                 "logprobs": None, "finish_reason": "length", "stop_reason": None}
            ],
            "usage": {"prompt_tokens": 16, "total_tokens": 24, "completion_tokens": 8},
        }
        self.completion = _response(200, json.dumps(completion).encode(), c.name)
        self.chat = _response(200, json.dumps(chat).encode(), c.name)
        self.completion_chunks = _sse_chunks(c, chat=False)
        self.chat_chunks = _sse_chunks(c, chat=True)


def _response(status: int, body: bytes, name: str, content_type: bytes = b"application/json",
              close: bool = False) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error",
              502: b"Bad Gateway", 503: b"Service Unavailable"}.get(status, b"Status")
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nx-mock-backend: %s\r\n"
        % (status, reason, content_type, len(body), name.encode())
    )
    if close:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_chunks(c: MockConfig, *, chat: bool) -> list[bytes]:
    """Headers, one chunked-encoding frame per SSE event, and the terminator.

    The last content event carries ``finish_reason``; in ``abort`` mode it is
    ``"abort"``, exactly what vLLM sends when SIGTERM cuts a stream short.
    """
    out = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\nx-mock-backend: " + c.name.encode() + b"\r\n\r\n"
    ]
    finish = "abort" if c.mode == "abort" else "length"
    for i in range(c.chunks):
        last = i == c.chunks - 1
        if chat:
            choice: dict[str, Any] = {"index": 0, "delta": {"content": f" t{i}"}, "logprobs": None,
                                      "finish_reason": finish if last else None}
            obj = {"id": f"chatcmpl-{c.name}", "object": "chat.completion.chunk",
                   "created": 1795322439, "model": c.model, "choices": [choice]}
        else:
            choice = {"index": 0, "text": f" t{i}", "logprobs": None,
                      "finish_reason": finish if last else None, "stop_reason": None}
            obj = {"id": f"cmpl-{c.name}", "object": "text_completion", "created": 1795322439,
                   "model": c.model, "choices": [choice]}
        out.append(_chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"))
    usage: dict[str, Any] = {"id": f"cmpl-{c.name}", "object": "chat.completion.chunk" if chat else
             "text_completion", "created": 1795322439, "model": c.model, "choices": [],
             "usage": {"prompt_tokens": 3, "total_tokens": 3 + c.chunks,
                       "completion_tokens": c.chunks}}
    out.append(_chunk(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"))
    out.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return out


class MockProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; enough of it for the router and for wrk."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
            method, _, rest = line.partition(b" ")
            path = rest.partition(b" ")[0]
            if not self._answer_now(method, path, body):
                # Handled by a task (delay, slots, streaming): one at a time
                # per connection, like HTTP/1.1 without pipelining.
                self.busy = True
                task = asyncio.ensure_future(self._serve(path, body))
                self.tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.busy = False
        if self.buf and self.transport is not None:
            self._next()

    def _answer_now(self, method: bytes, path: bytes, body: bytes) -> bool:
        s, c, t = self.state, self.state.config, self.transport
        assert t is not None
        if method == b"POST" and path in (b"/v1/completions", b"/v1/chat/completions"):
            if c.mode != "ok" or c.delay > 0 or c.slots or b'"stream"' in body:
                return False
            s.requests += 1
            s.generation_tokens += 8
            t.write(s.chat if path == b"/v1/chat/completions" else s.completion)
            return True
        if path == b"/health":
            t.write(_response(c.health, b"", c.name))
        elif path == b"/metrics":
            t.write(_response(200, _metrics(s).encode(), c.name, b"text/plain; version=0.0.4"))
        elif path == b"/v1/models":
            models = {"object": "list", "data": [{"id": c.model, "object": "model",
                                                 "owned_by": "vllm", "max_model_len": 512}]}
            t.write(_response(200, json.dumps(models).encode(), c.name))
        elif path == b"/_mock/stats":
            stats = {"name": c.name, "requests": s.requests, "running": s.running,
                     "waiting": len(s.waiting), "mode": c.mode, "slots": c.slots,
                     "busy_seconds": round(s.busy_seconds, 6)}
            t.write(_response(200, json.dumps(stats).encode(), c.name))
        elif path == b"/_mock/mode" and method == b"POST":
            try:
                change = json.loads(body)
                for key, value in change.items():
                    if key not in MockConfig.__dataclass_fields__ or key == "name":
                        raise ValueError(key)
                    setattr(c, key, type(getattr(c, key))(value))
                if c.mode not in MODES:
                    raise ValueError(c.mode)
            except (ValueError, TypeError, AttributeError) as exc:
                t.write(_response(400, json.dumps({"error": str(exc)}).encode(), c.name))
                return True
            s.encode()
            t.write(_response(200, b"{}", c.name))
        else:
            t.write(_response(404, b'{"detail":"Not Found"}', c.name))
        return True

    async def _serve(self, path: bytes, body: bytes) -> None:
        s, c = self.state, self.state.config
        if c.mode == "hang":
            await asyncio.Event().wait()
        if c.mode == "close":
            if self.transport is not None:
                self.transport.abort()
            return
        if c.slots and s.running >= c.slots:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            s.waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in s.waiting:
                    s.waiting.remove(waiter)
                raise
        s.running += 1
        started = time.monotonic()
        try:
            await self._generate(path, body)
        finally:
            s.running -= 1
            s.busy_seconds += time.monotonic() - started
            while s.waiting:
                nxt = s.waiting.popleft()
                if not nxt.done():
                    nxt.set_result(None)
                    break

    async def _generate(self, path: bytes, body: bytes) -> None:
        s, c = self.state, self.state.config
        s.requests += 1
        chat = path == b"/v1/chat/completions"
        if c.mode == "engine-dead":
            self._write(_response(500, ENGINE_DEAD_BODY, c.name))
            return
        if c.mode == "status":
            err = b'{"error":{"message":"mock status","type":"Error","param":null,"code":%d}}'
            self._write(_response(c.status, err % c.status, c.name))
            return
        if b'"stream":true' in body.replace(b" ", b""):
            frames = s.chat_chunks if chat else s.completion_chunks
            if c.mode == "nodone":
                # A clean end of the chunked body right before `data: [DONE]`.
                frames = [*frames[:-1], b"0\r\n\r\n"]
            self._write(frames[0])
            for i, frame in enumerate(frames[1:], 1):
                if c.mode == "error-event" and i == len(frames) // 2:
                    # What vLLM 0.32 sent when SIGTERM killed its engine core.
                    self._write(_chunk(b"data: " + json.dumps(
                        {"error": {"message": "EngineCore encountered an issue.",
                                   "type": "InternalServerError", "param": None,
                                   "code": 500}}).encode() + b"\n\n"))
                    self._write(frames[-1])
                    return
                if c.mode == "cut" and i == len(frames) // 2:
                    # Like a worker killed mid-stream: the connection just closes.
                    if self.transport is not None:
                        self.transport.close()
                    return
                if c.chunk_delay > 0 and frame is not frames[-1]:
                    await asyncio.sleep(c.chunk_delay)
                s.generation_tokens += 1
                self._write(frame)
            return
        if c.delay > 0:
            await asyncio.sleep(c.delay)
        s.generation_tokens += 8
        if c.mode == "abort":
            # vLLM answers a non-streaming request cut by SIGTERM with its 500.
            self._write(_response(500, ENGINE_DEAD_BODY, c.name))
            return
        self._write(s.chat if chat else s.completion)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


def _metrics(s: MockState) -> str:
    m = s.config.model
    tokens = float(s.generation_tokens)
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{engine="0",model_name="{m}"}} {float(s.running)}\n'
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{engine="0",model_name="{m}"}} {float(len(s.waiting))}\n'
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        f'vllm:generation_tokens_total{{engine="0",model_name="{m}"}} {tokens}\n'
    )


@dataclass
class MockBackend:
    """One running mock backend (in this process)."""

    port: int
    state: MockState
    server: asyncio.Server

    @property
    def config(self) -> MockConfig:
        return self.state.config

    def set(self, **changes: Any) -> None:
        """Change behaviour live (what POST /_mock/mode does)."""
        for key, value in changes.items():
            setattr(self.state.config, key, value)
        self.state.encode()

    def close(self) -> None:
        self.server.close()


def _factory(state: MockState) -> Callable[[], MockProtocol]:
    return lambda: MockProtocol(state)


async def serve(host: str, ports: list[int], config: MockConfig,
                tls: ssl.SSLContext | None = None) -> list[MockBackend]:
    """Start one mock backend per port (each with its own state); port 0 picks one."""
    loop = asyncio.get_running_loop()
    out = []
    for port in ports:
        state = MockState(MockConfig(**config.__dict__))
        server = await loop.create_server(_factory(state), host, port, reuse_address=True,
                                          backlog=1024, ssl=tls)
        bound = server.sockets[0].getsockname()[1]
        if config.name == "mock":
            state.config.name = f"mock-{bound}"
        state.encode()
        out.append(MockBackend(bound, state, server))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeinfer-mockbackend", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, action="append", required=True,
                   help="repeat for several backends in one process")
    p.add_argument("--name", default="mock")
    p.add_argument("--model", default="tiny")
    p.add_argument("--delay", type=float, default=0.0, help="seconds per non-streaming request")
    p.add_argument("--slots", type=int, default=0, help="concurrent requests; 0 = unlimited")
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--chunk-delay", type=float, default=0.0)
    p.add_argument("--mode", choices=MODES, default="ok")
    a = p.parse_args(argv)
    config = MockConfig(name=a.name, model=a.model, delay=a.delay, slots=a.slots, chunks=a.chunks,
                        chunk_delay=a.chunk_delay, mode=a.mode)
    async def run() -> None:
        backends = await serve(a.host, a.port, config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"mockbackend {os.getpid()} listening on {a.host}:{a.port}", flush=True)
        await stop.wait()
        for b in backends:
            b.close()

    import uvloop

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
