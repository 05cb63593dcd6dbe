"""The client connection's last lines of defence, with a stand-in transport
(the socket is the edge): a request task that fails unexpectedly still
answers the client, and a HEAD gets no body."""

from __future__ import annotations

import asyncio
import json

from kubeinfer.router.server import ClientConnection, Handler, Request


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = b""
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True


class Failing(Handler):
    """Runs each request as a task that raises, after ``send_head`` decides
    whether it first sent a response head."""

    max_body_bytes = 1024
    draining = False

    def __init__(self, send_head: bool) -> None:
        self.send_head = send_head

    def dispatch(self, conn: ClientConnection, req: Request) -> asyncio.Task[None] | None:
        async def broken() -> None:
            if self.send_head:
                conn.start_stream(200, b"content-type: text/event-stream\r\n")
            raise KeyError("a bug")

        task = asyncio.get_running_loop().create_task(broken())
        task.add_done_callback(conn.task_done)
        return task

    def connection_opened(self, conn: ClientConnection) -> None:
        pass

    def connection_closed(self, conn: ClientConnection) -> None:
        pass

    def request_done(self, conn: ClientConnection) -> None:
        pass

    def clock(self) -> float:
        return 0.0


async def _run(handler: Handler, raw: bytes) -> Transport:
    conn = ClientConnection(handler)
    transport = Transport()
    conn.connection_made(transport)
    conn.data_received(raw)
    for _ in range(5):  # the task, then its done callback
        await asyncio.sleep(0)
    return transport


async def test_a_failed_request_task_answers_500_json() -> None:
    t = await _run(Failing(send_head=False), b"POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
    head, _, body = t.sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert json.loads(body)["error"]["code"] == 500
    assert t.closed


async def test_a_failed_stream_is_cut() -> None:
    t = await _run(Failing(send_head=True), b"POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
    assert t.sent.startswith(b"HTTP/1.1 200 ")
    assert b"500" not in t.sent
    assert t.aborted


class Answering(Failing):
    def dispatch(self, conn: ClientConnection, req: Request) -> asyncio.Task[None] | None:
        conn.respond_error(405, "Method not allowed.")
        return None


async def test_head_gets_the_head_only_and_the_connection_closes() -> None:
    t = await _run(Answering(send_head=False), b"HEAD /healthz HTTP/1.1\r\n\r\n")
    head, _, body = t.sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"content-length: " in head
    assert b"connection: close" in head
    assert body == b""
    assert t.closed
