"""Waiting for an observable state: one polling helper, instead of a loop in each test.

`eventually(check, timeout=..., what=...)` calls `check` (sync or async) until it returns
a truthy value, and returns that value. On timeout it raises an AssertionError that says
what was awaited and the last value (or exception) `check` gave. Exceptions of the types
in `ignoring` (by default AssertionError) count as "not yet"; any other ends the wait at
once, so a check can stop early (e.g. when the process it waits on has exited).

`eventually_sync` is the same for the sync tests and fixtures (it blocks the thread).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

INTERVAL = 0.05


class _Last:
    """The last answer of the check: a value, or an exception of the ignored types."""

    def __init__(self) -> None:
        self.value: object = None
        self.error: BaseException | None = None

    def failure(self, what: str, timeout: float) -> AssertionError:
        said = f"raised {self.error!r}" if self.error is not None else f"gave {self.value!r}"
        text = f"not within {timeout} s: {what} (the last check {said})"
        return AssertionError(text)


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    interval: float = ...,
    what: str,
    ignoring: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = ...,
    what: str,
    ignoring: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    timeout: float,
    interval: float = INTERVAL,
    what: str,
    ignoring: tuple[type[Exception], ...] = (AssertionError,),
) -> Any:
    """`check()`'s first truthy value, polled every `interval` s for up to `timeout` s."""
    last = _Last()

    async def poll() -> Any:
        while True:
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
            except ignoring as exc:
                last.error = exc
            else:
                if value:
                    return value
                last.value, last.error = value, None
            await asyncio.sleep(interval)

    bound = asyncio.timeout(timeout)  # a check that hangs is bounded too
    try:
        async with bound:
            return await poll()
    except TimeoutError:
        if not bound.expired():
            raise  # the check's own timeout, not ours
        raise last.failure(what, timeout) from last.error


def eventually_sync(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = INTERVAL,
    what: str,
    ignoring: tuple[type[Exception], ...] = (AssertionError,),
) -> T:
    """As `eventually`, blocking: for sync fixtures and helpers. A check runs to its end."""
    last = _Last()
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except ignoring as exc:
            last.error = exc
        else:
            if value:
                return value
            last.value, last.error = value, None
        if time.monotonic() >= deadline:
            raise last.failure(what, timeout) from last.error
        time.sleep(interval)
