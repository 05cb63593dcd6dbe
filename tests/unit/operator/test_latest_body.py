"""A reconcile woken before the watch delivered our own status write plans
on the status we wrote, not on the stale one."""

from typing import Any

import pytest
from kubeinfer.operator.reconciler import latest_body, stale_versions


def body(version: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "llm", "resourceVersion": version},
        "status": {"phase": phase},
    }


def test_stale_body_gets_the_written_status() -> None:
    written = {("ns", "llm"): (("41", "42"), {"phase": "Ready"})}
    assert latest_body(written, body("41", "Pending"))["status"] == {"phase": "Ready"}
    assert ("ns", "llm") in written


@pytest.mark.parametrize("seen", ["42", "43"], ids=["our write", "a later one"])
def test_a_body_from_our_write_or_later_wins_and_the_written_status_is_forgotten(
    seen: str,
) -> None:
    written = {("ns", "llm"): (("41", "42"), {"phase": "Ready"})}
    assert latest_body(written, body(seen, "Ready"))["status"] == {"phase": "Ready"}
    assert written == {}


def test_other_objects_are_untouched() -> None:
    written = {("ns", "other"): (("41", "42"), {"phase": "Ready"})}
    assert latest_body(written, body("41", "Pending"))["status"] == {"phase": "Pending"}


def test_after_our_scale_write_both_versions_are_stale() -> None:
    # The scale write moved the object from 41 to 42, then we wrote status
    # (-> 43): a body at 41 or at 42 both predate the status we wrote.
    for seen in ("41", "42"):
        written = {("ns", "llm"): (("42", "41", "43"), {"phase": "Ready"})}
        assert latest_body(written, body(seen, "Pending"))["status"] == {"phase": "Ready"}
    written = {("ns", "llm"): (("42", "41", "43"), {"phase": "Ready"})}
    assert latest_body(written, body("44", "Degraded"))["status"] == {"phase": "Degraded"}
    assert written == {}


def test_two_writes_before_the_watch_catches_up_leave_both_stale() -> None:
    # Pass 1 planned on 41 and wrote RollingBack (-> 42); pass 2, woken
    # before the watch delivered 42, planned on the written status and wrote
    # RolledBack (-> 43). The watch then delivers 42: still stale, or pass 3
    # would see RollingBack and roll back (and post RolledBack) a second time.
    written: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, Any]]] = {}
    first = stale_versions(None, seen="41", produced="42", scaled=None)
    written[("ns", "llm")] = (first, {"phase": "RollingBack"})
    assert latest_body(written, body("41", "Analysing"))["status"] == {"phase": "RollingBack"}
    second = stale_versions(written[("ns", "llm")], seen="41", produced="43", scaled=None)
    written[("ns", "llm")] = (second, {"phase": "RolledBack"})
    assert latest_body(written, body("42", "RollingBack"))["status"] == {"phase": "RolledBack"}
    # The watch delivers our second write: caught up, nothing to remember.
    assert latest_body(written, body("43", "RolledBack"))["status"] == {"phase": "RolledBack"}
    assert written == {}


def test_stale_versions_keep_the_scale_write_and_drop_blanks() -> None:
    assert stale_versions(None, seen="41", produced="", scaled="42") == ("41", "42")
    assert stale_versions(None, seen="41", produced="43", scaled="42") == ("41", "42", "43")
