"""``qanat._aio``: waits that never lose a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from qanat._aio import raise_if_cancelled, wait_event


async def _old_wait(ev: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(ev.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _cancel_as_the_event_is_set(
    wait: Callable[[asyncio.Event, float], Awaitable[bool]],
) -> None:
    ev = asyncio.Event()
    task = asyncio.create_task(wait(ev, 10.0))
    await asyncio.sleep(0.01)  # let it block on the event
    ev.set()
    task.cancel()  # in the same loop iteration
    await task


async def test_a_cancellation_that_meets_the_event_still_raises() -> None:
    with pytest.raises(asyncio.CancelledError):
        await _cancel_as_the_event_is_set(wait_event)


async def test_plain_wait_for_is_the_reason() -> None:
    # what wait_event guards against, on this Python: wait_for returns normally
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for keeps the cancellation from Python 3.12 on")
    await _cancel_as_the_event_is_set(_old_wait)


async def test_wait_event_reports_set_and_timeout() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    asyncio.get_running_loop().call_soon(ev.set)
    assert await wait_event(ev, 5.0) is True
    assert await wait_event(ev, 0.0) is True  # already set


async def test_raise_if_cancelled_only_after_a_cancel() -> None:
    raise_if_cancelled()  # not cancelled: nothing happens

    async def swallow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # what a client library may do
        raise_if_cancelled()
        return "went on"

    task = asyncio.create_task(swallow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
