"""wait_for: errors are kept until the deadline, GiveUpError ends the wait at once."""

import asyncio

import pytest
from kubeinfer.localcluster.waiting import GiveUpError, WaitTimeoutError, async_wait_for, wait_for


def test_a_passing_error_is_reported_as_the_last_seen() -> None:
    calls = []

    def flaky() -> bool:
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeoutError, match="last seen: ConnectionError"):
        wait_for(flaky, 0.3, interval=0.05, what="a server")
    assert len(calls) > 1  # it kept trying


def test_give_up_is_raised_at_the_first_call() -> None:
    calls = []

    def exited() -> bool:
        calls.append(1)
        raise GiveUpError("the operator exited: boom")

    with pytest.raises(GiveUpError, match="boom"):
        wait_for(exited, 30, interval=0.05)
    assert calls == [1]


def test_async_give_up_is_raised_at_the_first_call() -> None:
    calls = []

    async def exited() -> bool:
        calls.append(1)
        raise GiveUpError("gone")

    with pytest.raises(GiveUpError, match="gone"):
        asyncio.run(async_wait_for(exited, 30, interval=0.05))
    assert calls == [1]


def test_the_value_is_returned() -> None:
    values = iter([None, 0, "ready"])
    assert wait_for(lambda: next(values), 5, interval=0.01) == "ready"
