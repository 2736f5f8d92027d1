"""job.wait_for when the awaited completion is committed by another queue (process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qanat import Job, Queue, job
from support import eventually


def _jobs() -> list[Job[Any]]:
    """Fresh job objects, as another process importing the same module would have."""

    @job(name="work")
    async def work(n: int) -> int:
        return n * 10

    @job(name="await_work")
    async def await_work() -> Any:
        return await work.wait_for({"n": 1}, timeout="20s")

    return [work, await_work]


async def test_completion_committed_by_another_worker_reaches_the_waiter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    a = Queue(jobs=_jobs(), storage=url)
    b = Queue(jobs=_jobs(), storage=url)
    await a.start()
    await b.start()
    try:
        waiter = await a.jobs.await_work.start()

        async def waiting() -> bool:
            return await waiter.status() == "waiting"

        await eventually(waiting)
        # b has never seen a waiter on "work"; its worker runs this start at once
        done = await b.jobs.work.start(n=1)
        assert (await done.record()).owner == (b.worker.id if b.worker else None)
        assert await done.result(timeout=10) == 10
        assert await waiter.result(timeout=10) == 10
    finally:
        await a.stop(grace=1)
        await b.stop(grace=1)
