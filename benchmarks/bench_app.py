"""The jobs the benchmarks run.

``queue`` (what ``qanat worker bench_app:queue`` loads) uses the storage URL in
``QANAT_BENCH_STORAGE`` or else the SQLite file named by ``QANAT_BENCH_DB``;
``make_queue(path)`` binds the same jobs to another file (or storage URL).
"""

from __future__ import annotations

import asyncio
import os

from qanat import Queue, job, run


@job
async def noop() -> None:
    """Does nothing: measures the queue, not the work."""


async def _nothing() -> None:
    """A no-op step body (async, so the step costs a checkpoint and no thread hop)."""


@job
async def ten_steps() -> int:
    """Ten checkpointed no-op steps."""
    for i in range(10):
        await run(f"s{i}", _nothing)
    return 10


@job
async def child(i: int) -> int:
    """One child of the fan-out."""
    return i


@job
async def fan_out(n: int) -> int:
    """Start ``n`` children at once and wait for them all."""
    results = await asyncio.gather(*[child.run(i=i) for i in range(n)])
    return len(results)


JOBS = [noop, ten_steps, child, fan_out]


def make_queue(path: str | os.PathLike[str]) -> Queue:
    """A queue of the benchmark jobs on the SQLite file ``path`` (synchronous=FULL), or
    on the storage ``path`` names if it is a URL."""
    where = os.fspath(path)
    return Queue(jobs=JOBS, storage=where if "://" in where else f"sqlite:///{where}")


queue = make_queue(
    os.environ.get("QANAT_BENCH_STORAGE") or os.environ.get("QANAT_BENCH_DB", "bench.db")
)
