"""The jobs the benchmarks run; the database path comes from ``QANAT_BENCH_DB``."""

from __future__ import annotations

import asyncio
import os

from qanat import Queue, job, run


@job
async def noop() -> None:
    """Does nothing: measures the queue, not the work."""


def _nothing() -> None:
    return None


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
    """Start ``n`` children and wait for them all."""
    results = await asyncio.gather(*[child.run(i=i) for i in range(n)])
    return len(results)


queue = Queue(
    jobs=[noop, ten_steps, child, fan_out],
    storage=f"sqlite:///{os.environ.get('QANAT_BENCH_DB', 'bench.db')}",
)
