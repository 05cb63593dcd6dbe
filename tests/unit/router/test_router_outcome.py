"""How a stream ended: the verdict table, and what the upstream exchange sees
of vLLM's bytes however they are split into reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubeinfer.router.outcome import StreamOutcome, stream_outcome
from kubeinfer.router.upstream import Exchange, UpstreamConnection, UpstreamPool

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32.0"
COMPLETE = (FIXTURES / "completion_stream.sse").read_bytes()
# What vLLM 0.32 sends on SIGTERM mid-stream (tests/fixtures/.../sigterm_midstream.txt).
ABORTED = COMPLETE.replace(b'"finish_reason":"length"', b'"finish_reason":"abort"')
# A worker killed halfway: the events so far, no [DONE].
CUT = COMPLETE[: COMPLETE.index(b"data: [DONE]")]
# vLLM 0.32 when SIGTERM killed its engine core mid-stream (json.dumps spacing).
ERRORED = CUT + (b'data: {"error": {"message": "EngineCore encountered an issue.", '
                 b'"type": "InternalServerError", "param": null, "code": 500}}\n\n'
                 b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("broken", "aborted", "done", "expected"),
    [
        (None, False, True, StreamOutcome("200", None, end_cleanly=True)),
        # Everything arrived; losing the connection after [DONE] lost nothing.
        ("reset", False, True, StreamOutcome("200", None, end_cleanly=True)),
        ("reset", False, False,
         StreamOutcome("reset", "stream broken before [DONE]: reset", end_cleanly=False)),
        ("stall", False, False,
         StreamOutcome("stall", "stream broken before [DONE]: stall", end_cleanly=False)),
        ("protocol", False, False,
         StreamOutcome("protocol", "stream broken before [DONE]: protocol", end_cleanly=False)),
        (None, False, False,
         StreamOutcome("truncated", "stream broken before [DONE]: body ended",
                       end_cleanly=False)),
        # vLLM on SIGTERM: abort chunk, [DONE], a clean end: passed through as it is.
        (None, True, True, StreamOutcome("abort", "finish_reason abort", end_cleanly=True)),
        (None, True, False, StreamOutcome("abort", "finish_reason abort", end_cleanly=True)),
        ("reset", True, False, StreamOutcome("abort", "finish_reason abort", end_cleanly=False)),
    ],
)
def test_stream_outcome(broken: str | None, aborted: bool, done: bool,
                        expected: StreamOutcome) -> None:
    outcome = stream_outcome(broken=broken, aborted=aborted, done=done)
    assert outcome == expected
    assert outcome.failed is (expected.error is not None)


@pytest.mark.parametrize(
    ("broken", "aborted", "done", "expected"),
    [
        (None, False, True, StreamOutcome("error", "error event in stream", end_cleanly=True)),
        (None, True, True, StreamOutcome("error", "error event in stream", end_cleanly=True)),
        ("reset", False, False,
         StreamOutcome("error", "error event in stream", end_cleanly=False)),
    ],
)
def test_an_error_event_fails_the_stream(broken: str | None, aborted: bool, done: bool,
                                         expected: StreamOutcome) -> None:
    assert stream_outcome(broken=broken, aborted=aborted, done=done,
                          error_event=True) == expected


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("read_size", [1, 3, 7, 31, 32, 33, 200, 1 << 20])
@pytest.mark.parametrize(
    ("body", "done", "aborted", "errored"),
    [(COMPLETE, True, False, False), (ABORTED, True, True, False), (CUT, False, False, False),
     (CUT.replace(b'"finish_reason":"length"', b'"finish_reason":"abort"'), False, True, False),
     (ERRORED, True, False, True)],
    ids=["complete", "aborted", "cut", "aborted-then-cut", "error-event"],
)
async def test_the_exchange_sees_done_abort_and_errors_across_reads(
        body: bytes, done: bool, aborted: bool, errored: bool, read_size: int) -> None:
    pool = UpstreamPool("127.0.0.1", 1)
    ex = Exchange(pool, UpstreamConnection(pool), True, asyncio.get_running_loop())
    got: list[bytes] = []
    ex.sink = got.append
    for piece in _split(body, read_size):
        ex.on_body(piece)
    assert b"".join(got) == body  # passed on untouched
    assert ex.ended_with_done is done
    assert ex.aborted_stream is aborted
    assert ex.error_event is errored
