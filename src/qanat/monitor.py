"""``queue.monitor``: the read models an operator's screen needs (the dashboard's pages):
live counts by job and status, throughput and failures over time, cron ticks, workers
and who waits on what. Built over the storage contract, like ``queue.executions``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qanat.cron import tick_of
from qanat.storage.base import (
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    STATUSES,
    ExecutionFilter,
    Waiter,
    WorkerRecord,
)
from qanat.storage.matching import match_of

if TYPE_CHECKING:
    from qanat.queue import Queue

#: How many of the newest executions a throughput chart reads at most (a bound on the
#: cost of one chart however busy the queue is; the chart says when it was reached).
CHART_SCAN = 20_000


@dataclass(frozen=True)
class CronInfo:
    """A cron job's schedule with its next tick and its newest tick's execution."""

    job: str
    expressions: list[str]
    tz: str
    next_tick: float
    last_tick: float | None
    last_execution: str | None
    last_status: str | None


@dataclass(frozen=True)
class Waiting:
    """An execution waiting in ``pipe.wait_for``: on which pipe, for what match."""

    execution_id: str
    pipe: str
    match: dict[str, Any] | None  # None: a predicate (Python code, not stored)
    since: float
    deadline: float | None


@dataclass
class Throughput:
    """Finished executions per time bucket and job: ``series[job][status][i]`` counts
    those that finished (``completed`` or ``failed``) in bucket ``i`` starting at
    ``start + i * width``. ``truncated``: the scan bound was reached (older buckets may
    be undercounted)."""

    start: float
    width: float
    buckets: int
    series: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    truncated: bool = False


class Monitor:
    """``queue.monitor``: summaries for dashboards, read from storage on each call."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    async def counts(self) -> dict[str, dict[str, int]]:
        """Executions by job and status (every status present, zeros included), for every
        registered job and every job that has stored executions."""
        q = self._queue
        await q.ensure_open()
        by_job = await q.storage.status_counts()
        out: dict[str, dict[str, int]] = {}
        for name in sorted(set(q.registry) | set(by_job)):
            got = by_job.get(name, {})
            out[name] = {s: got.get(s, 0) for s in STATUSES}
        return out

    async def throughput(self, since: float, until: float, buckets: int = 24) -> Throughput:
        """Completions and failures per job in ``buckets`` equal slices of [since, until).

        Reads executions newest first (``created_at``) and stops at the first created
        before ``since`` or after ``CHART_SCAN`` rows: one finished in the window but
        created before it is not counted."""
        if not (until > since) or buckets < 1:
            raise ValueError(
                f"throughput needs until > since and buckets >= 1, got {since}, {until}, {buckets}"
            )
        q = self._queue
        await q.ensure_open()
        width = (until - since) / buckets
        out = Throughput(since, width, buckets)
        flt = ExecutionFilter(status=list(FINISHED_STATUSES))
        cursor: str | None = None
        seen = 0
        while True:
            page = await q.storage.query(flt, 500, cursor)
            for rec in page.items:
                seen += 1
                if rec.created_at < since:
                    return out
                done = rec.completed_at
                if rec.status in (COMPLETED, FAILED) and done is not None and since <= done < until:
                    i = min(buckets - 1, math.floor((done - since) / width))
                    per = out.series.setdefault(
                        rec.job, {COMPLETED: [0] * buckets, FAILED: [0] * buckets}
                    )
                    per[rec.status][i] += 1
            if page.cursor is None:
                return out
            if seen >= CHART_SCAN:
                out.truncated = True
                return out
            cursor = page.cursor

    async def cron(self) -> list[CronInfo]:
        """Each registered cron job with its next tick and the newest tick's execution
        (found among the job's 50 newest executions)."""
        q = self._queue
        await q.ensure_open()
        now = q.clock()
        out = []
        for j in sorted(q.registry.values(), key=lambda j: j.name):
            if j.cron is None:
                continue
            last: tuple[float, str, str] | None = None
            page = await q.storage.query(ExecutionFilter(job=[j.name]), 50, None)
            for rec in page.items:
                tick = tick_of(rec.key)
                if tick is not None and (last is None or tick > last[0]):
                    last = (tick, rec.id, rec.status)
            out.append(
                CronInfo(
                    j.name,
                    list(j.cron.expressions),
                    str(j.cron.tz),
                    j.cron.next_after(now),
                    last[0] if last else None,
                    last[1] if last else None,
                    last[2] if last else None,
                )
            )
        return out

    async def workers(self) -> list[WorkerRecord]:
        """Registered worker processes with the executions they hold (``Storage.worker_list``;
        NotImplementedError if the storage cannot list them)."""
        await self._queue.ensure_open()
        return await self._queue.storage.worker_list()

    async def waiting(self, pipe: str | None = None, limit: int = 200) -> list[Waiting]:
        """Executions waiting on a pipe (or on any), oldest first, with their match."""
        await self._queue.ensure_open()
        return [_waiting(w) for w in await self._queue.storage.open_waiters(pipe, limit)]


def _waiting(w: Waiter) -> Waiting:
    match = match_of(w.shape, w.value) if w.shape is not None and w.value is not None else None
    return Waiting(w.execution_id, w.pipe, match, w.since, w.deadline)


__all__ = ["CHART_SCAN", "CronInfo", "Monitor", "Throughput", "Waiting"]
