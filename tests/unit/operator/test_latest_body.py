"""A reconcile woken before the watch delivered our own status write plans
on the status we wrote, not on the stale one."""

from typing import Any

from kubeinfer.operator.reconciler import latest_body


def body(version: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "llm", "resourceVersion": version},
        "status": {"phase": phase},
    }


def test_stale_body_gets_the_written_status() -> None:
    written = {("ns", "llm"): ("41", {"phase": "Ready"})}
    assert latest_body(written, body("41", "Pending"))["status"] == {"phase": "Ready"}
    assert ("ns", "llm") in written


def test_newer_body_wins_and_the_written_status_is_forgotten() -> None:
    written = {("ns", "llm"): ("41", {"phase": "Ready"})}
    assert latest_body(written, body("42", "Ready"))["status"] == {"phase": "Ready"}
    assert written == {}


def test_other_objects_are_untouched() -> None:
    written = {("ns", "other"): ("41", {"phase": "Ready"})}
    assert latest_body(written, body("41", "Pending"))["status"] == {"phase": "Pending"}
