"""Backoff after API errors, and which errors need a person."""

import json

import pytest
from kubeinfer.operator.retry import Refusal, refusal, report_now, retry_delay


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 0), (1, 2), (2, 4), (3, 8), (6, 64), (7, 120), (50, 120)]
)
def test_backoff_doubles_and_is_capped(failures: int, seconds: float) -> None:
    assert retry_delay(failures) == seconds


FORBIDDEN = json.dumps(
    {
        "kind": "Status",
        "status": "Failure",
        "message": 'pods is forbidden: User "system:serviceaccount:kubeinfer-system:kubeinfer" '
        'cannot create resource "pods" in API group "" in the namespace "team-a"',
        "reason": "Forbidden",
        "code": 403,
    }
)
INVALID = json.dumps(
    {
        "kind": "Status",
        "message": 'Pod "llm-r1-0" is invalid: spec.containers[0].resources.limits: '
        "Invalid value: ...",
        "code": 422,
    }
)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, FORBIDDEN, Refusal("Forbidden", json.loads(FORBIDDEN)["message"])),
        (422, INVALID.encode(), Refusal("Invalid", json.loads(INVALID)["message"])),
        (403, b"not json", Refusal("Forbidden", "not json")),
        (403, None, Refusal("Forbidden", "the API server answered 403")),
        (500, FORBIDDEN, None),  # retried
        (409, None, None),
        (None, None, None),  # a connection error
    ],
)
def test_refusals_need_a_person(
    status: int | None, body: str | bytes | None, expected: object
) -> None:
    assert refusal(status, body) == expected


@pytest.mark.parametrize(("in_a_row", "reported"), [(0, False), (1, False), (2, True), (5, True)])
def test_a_refusal_is_reported_when_the_next_pass_is_refused_too(
    in_a_row: int, reported: bool
) -> None:
    # One 403 alone is what a just restarted API server answers while its
    # RBAC cache fills: no person needs to act on that.
    assert report_now(in_a_row) is reported
