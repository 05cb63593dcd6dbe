"""OpenAI-style error bodies, shaped like vLLM's own.

vLLM answers ``{"error": {"message", "type", "param", "code"}}`` with the
HTTP status as ``code`` (tests/fixtures/vllm-0.32.0/err_*.txt); the router
answers the same way so that a client sees one error format whether the
router or a worker refused the request.
"""

from __future__ import annotations

import json

_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    431: "RequestHeaderFieldsTooLargeError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": _TYPES.get(status, "Error"), "param": param,
                   "code": status}},
        separators=(",", ":"),
    ).encode()
