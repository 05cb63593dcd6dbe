"""What the reconcile loop does after an API error (pure).

Errors that retrying can fix (the API server restarting, a timeout, a
conflict) are retried with exponential backoff, capped. Errors that
retrying cannot fix until a person acts, a 403 (the operator lacks a
permission) or a 422 (the API server refuses an object the operator built),
are reported once: a Degraded condition and one Warning event that quote
the API server's message, which names the permission or the field. A
refusal is reported when the next attempt is refused too: a kube-apiserver
that has just restarted answers 403 for a moment while its RBAC cache
fills (the chaos suite saw it), and that needs no person.
"""

import json
from dataclasses import dataclass

BASE_SECONDS = 2.0
MAX_SECONDS = 120.0


def retry_delay(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed ones in a
    row: 2, 4, 8, ... capped at 2 minutes."""
    if failures <= 0:
        return 0.0
    return min(BASE_SECONDS * 2.0 ** (failures - 1), MAX_SECONDS)


@dataclass(frozen=True)
class Refusal:
    """An API refusal a person must act on."""

    reason: str  # the Degraded condition's reason
    message: str  # the API server's words


REFUSALS = {403: "Forbidden", 422: "Invalid"}
# Refused passes in a row before the refusal is reported (see above).
REPORT_AFTER_REFUSALS = 2


def report_now(refusals_in_a_row: int) -> bool:
    """Whether a refusal is reported after this many refused passes in a row."""
    return refusals_in_a_row >= REPORT_AFTER_REFUSALS


def refusal(status: int | None, body: str | bytes | None) -> Refusal | None:
    """The refusal in an API error response, or None for errors worth retrying."""
    reason = REFUSALS.get(status or 0)
    if reason is None:
        return None
    message = ""
    try:
        parsed = json.loads(body or b"{}")
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or "")
    except ValueError:
        message = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return Refusal(reason, message or f"the API server answered {status}")
