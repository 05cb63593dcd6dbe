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
    written = {("ns", "llm"): (("41",), {"phase": "Ready"})}
    assert latest_body(written, body("41", "Pending"))["status"] == {"phase": "Ready"}
    assert ("ns", "llm") in written


def test_newer_body_wins_and_the_written_status_is_forgotten() -> None:
    written = {("ns", "llm"): (("41",), {"phase": "Ready"})}
    assert latest_body(written, body("42", "Ready"))["status"] == {"phase": "Ready"}
    assert written == {}


def test_other_objects_are_untouched() -> None:
    written = {("ns", "other"): (("41",), {"phase": "Ready"})}
    assert latest_body(written, body("41", "Pending"))["status"] == {"phase": "Pending"}


def test_after_our_scale_write_both_versions_are_stale() -> None:
    # The scale write moved the object from 41 to 42, then we wrote status:
    # a body at 41 or at 42 both predate the status we wrote.
    for seen in ("41", "42"):
        written = {("ns", "llm"): (("42", "41"), {"phase": "Ready"})}
        assert latest_body(written, body(seen, "Pending"))["status"] == {"phase": "Ready"}
    written = {("ns", "llm"): (("42", "41"), {"phase": "Ready"})}
    assert latest_body(written, body("43", "Degraded"))["status"] == {"phase": "Degraded"}
    assert written == {}
