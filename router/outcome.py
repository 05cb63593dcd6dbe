"""What a passed-through stream amounted to, once it ended.

A stream's 200 head reaches the client before the first token, so the
status line says nothing about how it went. An OpenAI stream is complete
only when it ends with ``data: [DONE]``; vLLM ends one that it aborted
(SIGTERM, engine abort) with ``finish_reason: "abort"`` and then
``[DONE]``, one whose engine died with an error event (``data:
{"error": ...}``) and then ``[DONE]``; a worker that dies (SIGKILL, OOM
kill, node loss) or stalls leaves it cut. Anything but a complete stream is a failure of the worker:
it counts in the metrics, in ``/debug/backends`` (so the canary analysis
rolls back a revision whose streams break) and for passive ejection, and
the access log line says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

# The status a failed stream is logged and counted with (access log,
# requests_total). The client saw "200" in the head, but what it got was a
# worker failure, which is a 502 in every other place of the router.
FAILED_STREAM_STATUS = 502
TRUNCATED = "truncated"  # the worker ended the body cleanly but without [DONE]


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """``label``: the attempt's outcome in ``backend_requests_total{status}``;
    ``error``: None for a complete stream, else what went wrong (access
    log); ``end_cleanly``: end the client's chunked body (else cut the
    connection, so that the client sees an incomplete response)."""

    label: str
    error: str | None
    end_cleanly: bool

    @property
    def failed(self) -> bool:
        return self.error is not None


def stream_outcome(*, broken: str | None, aborted: bool, done: bool,
                   error_event: bool = False) -> StreamOutcome:
    """Judge a stream that has ended.

    ``broken`` is the transport failure that ended it (``reset``, ``stall``,
    ``protocol``) or None when the worker ended the body itself; ``aborted``:
    a ``finish_reason: "abort"`` went through; ``done``: the body ends with
    ``data: [DONE]``; ``error_event``: vLLM sent ``data: {"error": ...}``
    (generation failed; it still ends with ``[DONE]``).
    """
    if error_event:
        return StreamOutcome("error", "error event in stream", end_cleanly=broken is None)
    if aborted:
        # vLLM's own signal that the answer is incomplete; pass its end
        # through when it made one.
        return StreamOutcome("abort", "finish_reason abort", end_cleanly=broken is None)
    if done:
        # Every event arrived; a connection lost after [DONE] took nothing.
        return StreamOutcome("200", None, end_cleanly=True)
    if broken is not None:
        return StreamOutcome(broken, f"stream broken before [DONE]: {broken}", end_cleanly=False)
    return StreamOutcome(TRUNCATED, "stream broken before [DONE]: body ended",
                         end_cleanly=False)
