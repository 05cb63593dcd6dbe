"""Termination messages of a requested stop: each says what happened, no more."""

import pytest
from kubeinfer.worker.stopnote import DrainEnd, StopReport, stop_message


@pytest.mark.parametrize(
    ("report", "message"),
    [
        # Drained: nothing to say (Kubernetes shows no message).
        (StopReport(False, 1.9, DrainEnd.DRAINED, 30.0), None),
        # --drain-seconds 0 asks for no drain.
        (StopReport(False, 0.0, DrainEnd.DRAINED, 0.0, in_flight=None), None),
        (
            StopReport(False, 30.04, DrainEnd.TIMED_OUT, 30.0, in_flight=2),
            "drain timed out after 30.0 s (--drain-seconds 30) with 2 requests in the engine",
        ),
        # The issue: a second signal after ~2 s was reported as a 30 s timeout.
        (
            StopReport(False, 2.07, DrainEnd.SECOND_SIGNAL, 30.0, in_flight=4),
            "drain cut short by a second signal after 2.1 s with 4 requests in the engine",
        ),
        (
            StopReport(False, 0.4, DrainEnd.SECOND_SIGNAL, 30.0, in_flight=1),
            "drain cut short by a second signal after 0.4 s with 1 request in the engine",
        ),
        (
            StopReport(False, 0.3, DrainEnd.SECOND_SIGNAL, 30.0, in_flight=0),
            "drain cut short by a second signal after 0.3 s with no requests in the engine",
        ),
        (
            StopReport(False, 0.0, DrainEnd.SECOND_SIGNAL, 30.0, in_flight=None),
            "drain cut short by a second signal after 0.0 s with an unknown number of "
            "requests (engine /metrics did not answer) in the engine",
        ),
        (StopReport(True, 412.3), "stopped while loading the model, after 412 s"),
        (
            StopReport(True, 12.0, engine_killed_after_s=15.0),
            "stopped while loading the model, after 12 s; "
            "engine did not stop within 15 s of SIGTERM and was killed",
        ),
        (
            StopReport(False, 1.0, DrainEnd.DRAINED, 30.0, engine_killed_after_s=15.0),
            "engine did not stop within 15 s of SIGTERM and was killed",
        ),
    ],
)
def test_stop_message(report: StopReport, message: str | None) -> None:
    assert stop_message(report) == message
