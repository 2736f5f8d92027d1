"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from qanat import Job, Queue


@pytest_asyncio.fixture
async def make_queue() -> AsyncIterator[Any]:
    """Build started queues (memory storage unless told otherwise); stops them afterwards.

    ``make(*jobs, worker=True, hot_sleep=None, storage="memory://", **queue_options)``.
    """
    queues: list[Queue] = []

    async def make(
        *jobs: Job[Any],
        worker: bool = True,
        hot_sleep: float | None = None,
        storage: Any = "memory://",
        **kw: Any,
    ) -> Queue:
        q = Queue(jobs=list(jobs), storage=storage, **kw)
        await q.start(worker=worker, hot_sleep=hot_sleep)
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.stop(grace=1)
