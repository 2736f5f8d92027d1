"""Small asyncio helpers that keep cancellation intact.

On Python 3.11 ``asyncio.wait_for(event.wait(), t)`` loses a cancellation that arrives
in the same loop iteration as the event is set: it returns normally and the task goes on
as if nobody had asked it to stop (fixed in 3.12). A loop waiting on a bell that rings
often, as the node's long poll and the workers' tickers do, meets that race sooner or
later, and then ``stop()`` waits for it forever. Wait through these instead.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop. A background loop that
    catches ``Exception`` around storage calls would otherwise outlive its cancellation:
    a storage client may turn the ``CancelledError`` of a cancelled call into an error of
    its own (redis-py does), the loop swallows it, and ``stop`` waits for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set.
    A cancellation always raises, even when the event was set at the same moment."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        raise_if_cancelled()
        return False
    raise_if_cancelled()
    return True


async def wait_any(events: tuple[asyncio.Event, ...], timeout: float | None) -> bool:
    """Wait until one of ``events`` is set or ``timeout`` seconds pass; True if one was.
    A cancellation always raises (see ``wait_event``)."""
    if any(e.is_set() for e in events):
        return True
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    raise_if_cancelled()
    return bool(done)
