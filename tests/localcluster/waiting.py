"""Wait for a condition with a deadline (the only way tests may wait)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """The condition did not hold before the deadline; says what was last seen."""


class GiveUpError(AssertionError):
    """Raised by a condition when waiting longer can't help (the process it
    waits for has exited): wait_for passes it on at once instead of keeping
    it as the last error seen until the deadline."""


def _timed_out(timeout: float, what: str, last: object) -> WaitTimeoutError:
    return WaitTimeoutError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll condition until it returns a truthy value and return that value.

    Raises WaitTimeoutError (an AssertionError) with the last value or error
    seen, or the GiveUpError the condition raised.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
        except GiveUpError:
            raise
        except Exception as error:  # kept: a timeout reports it as the last seen
            value, last = None, error
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, last)
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], Awaitable[T | None]],
    timeout: float,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    *,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """The async form of wait_for: condition is a coroutine function."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = await condition()
        except GiveUpError:
            raise
        except Exception as error:  # kept: a timeout reports it as the last seen
            value, last = None, error
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, last)
        await asyncio.sleep(interval)
