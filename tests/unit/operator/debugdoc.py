"""Whole /debug/backends documents for tests that care about a few fields:
everything else gets a neutral value, and the result is the shared model,
so a test can't drift from what routers write."""

from typing import Any

from kubeinfer.operator.api.debugbackends import DebugBackends

WINDOW: dict[str, Any] = {
    "seconds": 60.0,
    "requests": 0,
    "errors": 0,
    "errorRate": 0.0,
    "p50LatencyMs": None,
    "p99LatencyMs": None,
    "p50TtftMs": None,
    "p90TtftMs": None,
    "p99TtftMs": None,
}


def backend(**fields: Any) -> dict[str, Any]:
    name = fields.get("name", "w0")
    base: dict[str, Any] = {
        "name": name,
        "url": f"http://127.0.0.1:9000/{name}",
        "revision": "r1",
        "healthy": True,
        "draining": False,
        "ejected": False,
        "inFlight": 0,
        "queueDepth": None,
        "requests": 0,
        "errors": 0,
        "oldestRunningSeconds": None,
        "kvUsage": None,
        "gpu": None,
    }
    window = {**WINDOW, **fields.pop("window", {})}
    return {**base, **fields, "window": window}


def document(*backends: dict[str, Any], **fields: Any) -> DebugBackends:
    return DebugBackends.model_validate(
        {
            "generation": 1,
            "model": "m",
            "backends": [backend(**b) for b in backends],
            "revisions": {},
            "queue": {"length": 0, "capacity": 256},
            "demand": {},
            **fields,
        }
    )
