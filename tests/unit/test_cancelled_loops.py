"""A worker's background loops end when stopped even if a storage call turns their
cancellation into an error of its own, as redis-py does for a cancelled command (seen:
``qanat worker`` on Redis hanging after "draining: 0 running")."""

from __future__ import annotations

import asyncio

from qanat import Queue, job
from qanat.storage import MemoryStorage


@job
async def noop() -> None:
    return None


class CancelToError(MemoryStorage):
    """``paused_jobs`` blocks once asked to, and answers its cancellation with an error."""

    def __init__(self) -> None:
        super().__init__()
        self.block = False
        self.entered = asyncio.Event()

    async def paused_jobs(self) -> set[str]:
        if self.block:
            self.entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ConnectionError("connection closed while reading a reply") from None
        return await super().paused_jobs()


async def test_stop_ends_a_loop_whose_storage_call_turns_cancel_into_an_error() -> None:
    store = CancelToError()
    queue = Queue(jobs=[noop], storage=store)
    await queue.start(worker=True)
    try:
        store.block = True
        await noop.start()  # a change: the control loop re-reads the paused jobs
        await asyncio.wait_for(store.entered.wait(), 10)
    finally:
        # without the check in the loops, stop waits for the control loop (forever in the
        # Redis worker where it was seen; here until wait_for gives up, which returns
        # without raising because the stop swallows that cancellation too)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(queue.stop(1.0), 10)
        took = asyncio.get_running_loop().time() - started
    assert took < 5, f"stop took {took:.1f}s: a loop outlived its cancellation"
