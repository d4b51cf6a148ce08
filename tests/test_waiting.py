"""The one polling helper: what it returns, how it fails, what ends a wait early."""

from __future__ import annotations

import asyncio
import time

import pytest

from .waiting import eventually, eventually_sync


async def test_returns_the_first_truthy_value_of_a_sync_or_async_check() -> None:
    calls: list[int] = []

    def sync_check() -> list[int] | None:
        calls.append(1)
        return calls if len(calls) == 3 else None

    async def async_check() -> str:
        await asyncio.sleep(0)
        return "ready"

    assert await eventually(sync_check, timeout=5, interval=0.001, what="three calls") == [1] * 3
    assert await eventually(async_check, timeout=5, what="ready") == "ready"


async def test_a_timeout_says_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as info:
        await eventually(lambda: [], timeout=0.2, interval=0.01, what="a nonempty list")
    assert "a nonempty list" in str(info.value) and "gave []" in str(info.value)
    assert "0.2 s" in str(info.value)


async def test_an_assertion_is_not_yet_and_is_reported_on_timeout() -> None:
    def check() -> bool:
        raise AssertionError("still 3 left")

    with pytest.raises(AssertionError, match=r"the last check raised .*still 3 left") as info:
        await eventually(check, timeout=0.2, interval=0.01, what="none left")
    assert isinstance(info.value.__cause__, AssertionError)


async def test_another_exception_ends_the_wait_at_once() -> None:
    def check() -> bool:
        raise RuntimeError("the process exited")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        await eventually(check, timeout=30, what="never")
    assert time.monotonic() - started < 5


async def test_a_check_that_hangs_is_bounded_by_the_timeout() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    started = time.monotonic()
    with pytest.raises(AssertionError, match="an answer"):
        await eventually(hangs, timeout=0.3, what="an answer")
    assert time.monotonic() - started < 5


def test_the_sync_twin_returns_and_fails_alike() -> None:
    seen: list[int] = []

    def twice() -> bool:
        seen.append(1)
        return len(seen) >= 2

    assert eventually_sync(twice, timeout=5, interval=0.001, what="a second call") is True
    with pytest.raises(ConnectionRefusedError):
        eventually_sync(_refused, timeout=30, what="never")
    with pytest.raises(AssertionError, match=r"a port.*raised ConnectionRefusedError"):
        eventually_sync(_refused, timeout=0.2, interval=0.01, what="a port", ignoring=(OSError,))


def _refused() -> bool:
    raise ConnectionRefusedError("nobody listens")
