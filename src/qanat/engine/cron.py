"""The cron scheduler loop every worker runs (schedules themselves: ``qanat.cron``).

Each tick is enqueued with the key ``cron:<tick epoch seconds>``; the storage's unique
``(job, key)`` keeps exactly one execution per tick however many workers enqueue it.
Missed ticks are found by the worker elected for housekeeping (``Storage.lead``), when
it becomes the leader, and handled per ``Job(cron_missed=...)`` (see ``qanat.cron``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qanat.cron import DUE_GRACE, HISTORY_SCAN, MISSED_LIMIT, SCHEDULED_AT, tick_key, tick_of
from qanat.storage.base import SKIPPED, ExecutionFilter

if TYPE_CHECKING:
    from qanat.engine.worker import Worker
    from qanat.job import Job

log = logging.getLogger("qanat")


class CronScheduler:
    """Enqueues the ticks of a queue's cron jobs, from inside one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.queue = worker.queue
        #: ticks after this are this scheduler's, the ones before catch-up's (set when
        #: the worker starts, from the storage's clock)
        self.started = 0.0

    def _jobs(self) -> list[Job[Any]]:
        return [j for j in self.queue.registry.values() if j.cron is not None]

    async def run(self) -> None:
        jobs = self._jobs()
        if jobs:
            await asyncio.gather(*(self._run_job(j) for j in jobs))

    async def catch_up_all(self) -> None:
        """Handle the missed ticks of every cron job (done by the elected worker only)."""
        for j in self._jobs():
            try:
                await self.catch_up(j, self.started)
            except Exception:
                log.exception("qanat: looking for missed cron ticks of job %r failed", j.name)

    async def _run_job(self, j: Job[Any]) -> None:
        assert j.cron is not None
        after = self.started
        clock = self.worker.storage.clock
        while True:
            tick = j.cron.next_after(after)
            while (left := tick - clock()) > 0:
                await asyncio.sleep(left)
            await self._enqueue_tick(j, tick)
            after = tick

    async def _enqueue_tick(self, j: Job[Any], tick: float) -> None:
        for attempt in range(3):
            try:
                await self.enqueue(j, [tick])
                return
            except Exception:
                log.exception("qanat: enqueueing cron tick %s of job %r failed", tick, j.name)
                if attempt < 2:
                    await asyncio.sleep(0.2 * (attempt + 1))

    def _input(self, j: Job[Any], tick: float) -> dict[str, Any]:
        assert j.cron is not None
        return {SCHEDULED_AT: j.cron.at(tick)} if j.cron_scheduled_at else {}

    async def enqueue(self, j: Job[Any], ticks: Sequence[float]) -> None:
        """Start one execution per tick (the key makes it one across all workers)."""
        for tick in ticks:
            await self.queue.start_execution(j, (), self._input(j, tick), {"key": tick_key(tick)})

    async def record_missed(self, j: Job[Any], ticks: Sequence[float]) -> None:
        """Store missed ticks as ``skipped`` executions with reason ``"missed"``."""
        if not ticks:
            return
        at = self.worker.storage.clock()  # completed_at of a skipped tick: for display
        records = []
        for tick in ticks:
            rec, _ = j.new_record((), self._input(j, tick), key=tick_key(tick))
            rec.status = SKIPPED
            rec.reason = "missed"
            rec.available_at = None
            rec.created_at = tick
            rec.run_at = tick
            rec.completed_at = at
            records.append(rec)
        await self.queue.storage.enqueue(records)

    async def last_tick(self, j: Job[Any]) -> float | None:
        """The newest tick of ``j`` that has an execution (among its newest executions)."""
        page = await self.queue.storage.query(ExecutionFilter(job=[j.name]), HISTORY_SCAN, None)
        ticks = [t for t in (tick_of(r.key) for r in page.items) if t is not None]
        return max(ticks) if ticks else None

    async def catch_up(self, j: Job[Any], started: float) -> None:
        """Handle the ticks that fell due since the last one with an execution."""
        assert j.cron is not None
        last = await self.last_tick(j)
        if last is None:  # never ran: nothing was missed
            return
        ticks, older = j.cron.ticks_between(last, started, MISSED_LIMIT)
        due = [t for t in ticks if t >= started - DUE_GRACE]
        missed = [t for t in ticks if t < started - DUE_GRACE]
        if not missed:
            await self.enqueue(j, due)
            return
        policy = j.cron_missed
        if policy == "all":
            run, record = missed + due, []
        elif policy == "latest":
            run = due or missed[-1:]
            record = missed if due else missed[:-1]
        else:
            run, record = due, missed
        log.warning(
            "qanat: job %r missed %s%d cron ticks up to %s while no worker ran "
            "(cron_missed=%r): running %d of them, recording %d as skipped",
            j.name,
            "more than " if older else "",
            len(missed),
            j.cron.at(missed[-1]).isoformat(),
            policy,
            len([t for t in run if t in missed]),
            len(record),
        )
        await self.record_missed(j, record)
        await self.enqueue(j, run)
