"""Fuzzing the router's HTTP input (hypothesis) against the real process.

One `kubeinfer-router` process (prefix affinity, so the affinity key is
computed from every body) in front of one mock backend process. Raw
sockets send whatever hypothesis makes of methods, paths, headers, bodies
and chunked uploads, well-formed or not. For every example:

- the answer is a well-formed HTTP/1.1 response (``http.client`` parses
  it) within a deadline;
- it is either proxied (``x-kubeinfer-backend`` names the worker) or the
  router's own answer: a success for the GET endpoints, or an OpenAI-shaped
  JSON error object with a 4xx status (the backend is healthy, so a 5xx of
  the router's own would be a bug);
- the process is still alive and serves a good request afterwards.

Cases that once broke the router are kept as explicit ``@example``s.
The examples are derandomized (profile ``ci`` in tests/conftest.py); run
``--hypothesis-profile=long`` for a longer, random search.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubeinfer.localcluster.ports import free_port
from kubeinfer.localcluster.waiting import wait_for
from routerhelpers import HOST, make_table, start_router_process

MAX_BODY = 64 * 1024
READ_TIMEOUT = 1.5
ANSWER_DEADLINE = 10.0
PATHS = [
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
    "/debug/backends",
    "/internal/snapshot",
    "/",
    "/v1/completions/..",
]
GOOD = b'{"model":"tiny","prompt":"hello","max_tokens":4}'

_fuzz = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None
)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass
class RouterProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the router died:\n{self.log.read_text()[-3000:]}"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except (OSError, http.client.HTTPException):
        return 0


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    mock_port = free_port()
    mock = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "kubeinfer.localcluster.mockbackend",
            "--port",
            str(mock_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc, port, log = start_router_process(
        tmp,
        make_table([f"http://{HOST}:{mock_port}"], strategy="prefix-affinity"),
        "--max-body-bytes",
        str(MAX_BODY),
        "--request-read-timeout",
        str(READ_TIMEOUT),
    )
    try:
        wait_for(
            lambda: _get(f"http://{HOST}:{port}/readyz") == 200, 20, what="the router to be ready"
        )
        yield RouterProcess(proc, port, log)
    finally:
        for p in (proc, mock):
            p.kill()
            p.wait(5)


def exchange(port: int, raw: bytes, *, head: bool = False) -> Answer:
    """Send ``raw`` on a fresh connection and parse one response."""
    with socket.create_connection((HOST, port), timeout=ANSWER_DEADLINE) as sock:
        # The router may answer early (413, 431) and stop reading.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        resp = http.client.HTTPResponse(sock, method="HEAD" if head else "GET")
        resp.begin()
        body = resp.read()
        return Answer(resp.status, resp.headers, body)


def assert_well_formed(answer: Answer, *, head: bool = False) -> None:
    """A proxied answer, a success of the router's own, or its JSON error."""
    if answer.headers.get("x-kubeinfer-backend"):
        return
    if answer.status < 400:
        return
    assert answer.status < 500, f"router error {answer.status}: {answer.body[:300]!r}"
    assert answer.headers.get("content-type") == "application/json", answer.headers
    if head:
        assert answer.body == b""  # the head of the error only
        return
    error = json.loads(answer.body)["error"]
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert error["code"] == answer.status
    assert isinstance(error["type"], str)


def assert_still_serving(router: RouterProcess) -> None:
    router.alive()
    raw = (
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(GOOD), GOOD)
    )
    answer = exchange(router.port, raw)
    assert answer.status == 200, answer.body


# -- strategies ---------------------------------------------------------------

_token = st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=20)
_methods = (
    st.sampled_from(
        [
            "GET",
            "POST",
            "PUT",
            "DELETE",
            "PATCH",
            "OPTIONS",
            "TRACE",
            "CONNECT",
            "PRI",
            "get",
            "P0ST",
            "",
            "GET GET",
        ]
    )
    | _token
)
_paths = (
    st.sampled_from(PATHS)
    | st.builds(lambda p, q: p + "?" + q, st.sampled_from(PATHS), _token)
    | st.lists(
        st.sampled_from(
            ["v1", "..", ".", "%2e%2e", "%00", "%ff", "completions", "", "%2F", "~", "a" * 300]
        ),
        max_size=8,
    ).map(lambda s: "/" + "/".join(s))
    | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=50)
    | st.integers(1, 80_000).map(lambda n: "/" + "a" * n)
)
_header_names = (
    st.sampled_from(
        [
            "content-type",
            "x-request-id",
            "x-session-id",
            "authorization",
            "connection",
            "expect",
            "host",
            "upgrade",
            "te",
            "trailer",
            "accept",
            "X-Foo",
            "bad name",
            "",
            "content-length",
            "transfer-encoding",
        ]
    )
    | _token
)
_header_values = (
    st.sampled_from(
        [
            "application/json",
            "keep-alive",
            "close",
            "100-continue",
            "chunked",
            "gzip, chunked",
            "chunked, chunked",
            "-1",
            "0x10",
            "1e3",
            "",
            " ",
            "99999999999999999999999999",
            "websocket",
            "\t",
        ]
    )
    | _token
    | st.integers(1, 70_000).map(lambda n: "v" * n)
)
_headers = st.lists(st.tuples(_header_names, _header_values), max_size=6)

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
# OpenAI requests with each field right, wrong-typed or missing.
_openai = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["tiny", "other", ""]) | _json,
        "prompt": st.text(max_size=50) | st.lists(st.integers(-5, 2**70), max_size=5) | _json,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system"]),
                    "content": st.text(max_size=30) | _json,
                }
            ),
            max_size=3,
        )
        | _json,
        "stream": st.booleans() | _json,
        "max_tokens": st.integers(-(2**70), 2**70) | _json,
        "user": st.text(max_size=10) | _json,
        "temperature": st.floats() | _json,
    },
)
_bodies = (
    _openai.map(lambda d: json.dumps(d).encode())
    | _json.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=200)
    | st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(1, 6_000).map(
        lambda n: b'{"model":"tiny","prompt":"x","max_tokens":' + b"9" * n + b"}"
    )
)


def _request(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes, length: str | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: router"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length is not None:
        lines.append(f"content-length: {length}")
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


# -- tests --------------------------------------------------------------------


@settings(_fuzz, max_examples=settings.default.max_examples * 5)
@given(
    method=_methods,
    path=_paths,
    headers=_headers,
    body=_bodies,
    length=st.none()
    | st.just("exact")
    | st.sampled_from(["0", "-1", "abc", "1 1", "99999999999", "5"]),
)
@example(
    method="POST",
    path="/v1/completions",
    headers=[],
    length="exact",
    body=b"[" * 100_000 + b"]" * 100_000,
)  # json's RecursionError: no answer at all
@example(
    method="POST",
    path="/v1/completions",
    headers=[],
    length="exact",
    body=b'{"model":"tiny","prompt":"x","user":"\\ud800"}',
)  # lone surrogate: task crashed
@example(method="HEAD", path="/healthz", headers=[], length=None, body=b"")  # body after HEAD
# Bytes after a `connection: close` request cut the request in flight (long profile).
@example(method="GET", path="/v1/models", headers=[], length=None, body=b"{}")
def test_any_request_gets_a_well_formed_answer(
    router: RouterProcess,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    length: str | None,
) -> None:
    size = str(len(body)) if length == "exact" else length
    if len(body) > MAX_BODY:
        size = str(len(body))
    answer = exchange(
        router.port, _request(method, path, headers, body, size), head=method == "HEAD"
    )
    assert_well_formed(answer, head=method == "HEAD")
    router.alive()


@_fuzz
@given(
    body=_bodies,
    cuts=st.lists(st.integers(1, 400), max_size=8),
    corruption=st.sampled_from(
        [None, "bad-size", "no-crlf", "extension", "huge-size", "negative", "with-length"]
    ),
)
def test_chunked_uploads(
    router: RouterProcess, body: bytes, cuts: list[int], corruption: str | None
) -> None:
    body = body[: MAX_BODY - 1]
    pieces, rest = [], body
    for cut in cuts:
        if not rest:
            break
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p)
    end = b"0\r\n\r\n"
    head = (
        b"POST /v1/completions HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n"
    )
    if corruption == "bad-size":
        chunks = b"zz\r\n" + chunks
    elif corruption == "no-crlf":
        chunks = chunks.replace(b"\r\n", b"\n", 1)
    elif corruption == "extension":
        chunks = b"1;name=value\r\n{\r\n" + chunks
    elif corruption == "huge-size":
        chunks = b"fffffffffffffffffff\r\n" + chunks
    elif corruption == "negative":
        chunks = b"-5\r\n" + chunks
    elif corruption == "with-length":
        head += b"content-length: 3\r\n"
    answer = exchange(router.port, head + b"\r\n" + chunks + end)
    assert_well_formed(answer)
    router.alive()


def test_an_unfinished_upload_is_cut(router: RouterProcess) -> None:
    """A chunked upload that never ends gets a 408 at the read timeout."""
    started = time.monotonic()
    answer = exchange(
        router.port,
        b"POST /v1/completions HTTP/1.1\r\nhost: r\r\n"
        b'transfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n',
    )
    assert answer.status == 408, answer.body
    assert json.loads(answer.body)["error"]["type"] == "RequestTimeoutError"
    assert time.monotonic() - started < READ_TIMEOUT + 5.0
    router.alive()


class _Unclosable:
    """One buffered reader under several ``http.client`` responses."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def makefile(self, *_: object, **__: object) -> _Unclosable:
        return self

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)

    def close(self) -> None:
        pass


def test_garbage_after_a_good_request_gets_its_own_answer(router: RouterProcess) -> None:
    """Pipelined: a good request in flight, then bytes that are no HTTP. The
    good one is answered, then a 400 for the rest, then the connection closes."""
    raw = (
        b"GET /v1/models HTTP/1.1\r\nhost: r\r\n\r\n"
        b"POST /v1/completions HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\n\r\n%b"
        b"\x00\x01 not http\r\n\r\n" % (len(GOOD), GOOD)
    )
    with socket.create_connection((HOST, router.port), timeout=ANSWER_DEADLINE) as sock:
        sock.sendall(raw)
        shared = _Unclosable(sock)
        statuses = []
        for _ in range(3):
            resp = http.client.HTTPResponse(shared)  # type: ignore[arg-type]
            resp.begin()
            body = resp.read()
            statuses.append(resp.status)
        assert statuses == [200, 200, 400], statuses
        assert json.loads(body)["error"]["code"] == 400
        assert resp.getheader("connection") == "close"
        assert shared.file.read() == b""  # closed
    router.alive()


def test_the_router_keeps_serving_after_fuzzing(router: RouterProcess) -> None:
    """Runs after the properties above (file order): nothing they sent broke it."""
    assert_still_serving(router)


def test_slow_clients_are_cut_and_do_not_block_others(router: RouterProcess) -> None:
    """Slowloris: many connections dribble a request head; good requests are
    still served, and every slow connection is answered 408 (JSON) and
    closed once the read timeout passes."""
    slow = [
        socket.create_connection((HOST, router.port), timeout=ANSWER_DEADLINE) for _ in range(30)
    ]
    silent = socket.create_connection((HOST, router.port), timeout=ANSWER_DEADLINE)
    try:
        for s in slow:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: r\r\n")
        # Each trickle of header lines does not extend a slow client's time;
        # good requests are served meanwhile.
        for i in range(3):
            for s in slow:
                s.sendall(b"x-slow-%d: 1\r\n" % i)
            assert_still_serving(router)
        for s in slow:
            resp = http.client.HTTPResponse(s)
            resp.begin()
            assert resp.status == 408
            assert json.loads(resp.read())["error"]["code"] == 408
        # A connection that never sent a byte is closed without an answer.
        assert silent.recv(1) == b""
    finally:
        for s in [*slow, silent]:
            s.close()
    assert_still_serving(router)
