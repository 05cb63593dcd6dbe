"""The termination message of a worker stopped on request (exit 0).

A pure function over what the agent saw, so each message is checked
against its case in a table: a message that blames the timeout when a
second signal cut the drain sends people looking in the wrong place.
"""

import enum
from dataclasses import dataclass


class DrainEnd(enum.Enum):
    DRAINED = "drained"  # the engine was idle for the quiet period
    TIMED_OUT = "timed out"  # --drain-seconds passed with requests in flight
    SECOND_SIGNAL = "second signal"  # SIGTERM/SIGINT again: stop now


@dataclass(frozen=True)
class StopReport:
    """How a requested stop went."""

    loading: bool  # the signal came before the engine answered /health
    elapsed_s: float  # drain time, or time since start when loading
    end: DrainEnd | None = None  # None when loading (no drain)
    drain_limit_s: float = 0.0  # --drain-seconds
    # Requests running or waiting in the engine when the drain ended (what
    # vLLM's gauges count: not those still in its HTTP front end); None
    # when the engine's /metrics never answered during the drain.
    in_flight: int | None = 0
    # Set when the engine ignored SIGTERM for --engine-stop-seconds.
    engine_killed_after_s: float | None = None


def _requests(count: int | None) -> str:
    if count is None:
        return "an unknown number of requests (engine /metrics did not answer)"
    if count == 0:
        return "no requests"
    return f"{count} request{'s' if count != 1 else ''}"


def stop_message(report: StopReport) -> str | None:
    """The one line for the termination log; None when there is nothing to say."""
    if report.loading:
        message = f"stopped while loading the model, after {report.elapsed_s:.0f} s"
    elif report.end is DrainEnd.SECOND_SIGNAL:
        message = (
            f"drain cut short by a second signal after {report.elapsed_s:.1f} s "
            f"with {_requests(report.in_flight)} in the engine"
        )
    elif report.end is DrainEnd.TIMED_OUT:
        message = (
            f"drain timed out after {report.elapsed_s:.1f} s (--drain-seconds "
            f"{report.drain_limit_s:g}) with {_requests(report.in_flight)} in the engine"
        )
    else:
        message = ""
    if report.engine_killed_after_s is not None:
        killed = (
            f"engine did not stop within {report.engine_killed_after_s:g} s of SIGTERM "
            "and was killed"
        )
        message = f"{message}; {killed}" if message else killed
    return message or None
