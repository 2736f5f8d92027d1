"""Drives one claimed execution: replay memo, handler call, timeout, retry or finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from qanat.context import Context
from qanat.durations import backoff_delay, parse_duration, to_timestamp
from qanat.errors import (
    LeaseLost,
    NonDeterminism,
    NonRetryable,
    PayloadTooLarge,
    RetryAfter,
    StorageError,
    Suspend,
    Timeout,
    WorkerLost,
)
from qanat.failures import encode_error
from qanat.observability.tracing import active_tracer, attempt_span, end_attempt
from qanat.steps.state import ExecState, set_current
from qanat.storage.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PAUSED,
    PENDING,
    WAITING,
    CompletionEvent,
    ExecutionRecord,
    Finish,
    LogRecord,
)

if TYPE_CHECKING:
    from qanat.engine.worker import Worker

log = logging.getLogger("qanat")


async def execute(worker: Worker, rec: ExecutionRecord, st: ExecState) -> None:
    """Run one attempt of a claimed execution to its next resting point."""
    token = set_current(st)
    try:
        if active_tracer() is None:
            await _attempt(worker, st)
        else:
            with attempt_span(rec.job, rec.id, rec.attempt, rec.trace) as span:
                st.span = span
                await _attempt(worker, st)
    finally:
        set_current(None)
        del token


async def _attempt(worker: Worker, st: ExecState) -> None:
    rec, job, queue = st.record, st.job, worker.queue
    storage = worker.storage
    try:
        value = job.decode_input(rec.input)
    except Exception as exc:
        await _final_failure(worker, st, None, exc)
        return
    if rec.claims > 1 or rec.attempt > 1:
        st.memo = {s.key: s for s in await storage.steps(rec.id)}
    if rec.recoveries >= queue.max_recoveries:  # a poison pill: do not run it again
        await _final_failure(worker, st, value, _worker_lost(st, queue.max_recoveries))
        return
    st.ctx = Context(st, queue.context)
    if rec.claims == 1 and rec.attempt == 1:
        if queue.metrics is not None and rec.started_at is not None:
            # the first claim wrote started_at from the storage's clock, as run_at was
            queue.metrics.on_start(job.name, rec.started_at - rec.run_at)
        await queue.fire(job, "start", rec.id, value)
    limit = job.timeout_for(value)
    deadline_hit = False
    past_deadline: Timeout | None = None
    if rec.deadline is not None:
        left = rec.deadline - storage.clock()  # a local timer
        if limit is None or left < limit:
            limit, deadline_hit = max(0.0, left), True
    try:
        if limit is None:
            out = await job.invoke(value, st.ctx, worker.run_sync)
        else:
            try:
                async with asyncio.timeout(limit):
                    out = await job.invoke(value, st.ctx, worker.run_sync)
            except TimeoutError as exc:
                what = "deadline" if deadline_hit else f"timeout of {limit:g}s"
                err = Timeout(f"job {job.name!r} exceeded its {what}")
                if deadline_hit:  # SPEC §3: a Timeout, and no retry (the deadline has passed)
                    past_deadline = err
                raise err from exc
        text = job.encode_output(out)
    except Suspend:
        if st.suspended:  # a wait step suspended it in its own transaction
            if st.suspend_until is not None:
                worker.wake_at(st.suspend_until)
            end_attempt(st.span, WAITING)
            return
        await worker.flush(st)
        status = st.suspend_status or WAITING
        if await storage.suspend(rec.id, worker.id, status, st.suspend_until):
            if st.suspend_until is not None:
                worker.wake_at(st.suspend_until)
            end_attempt(st.span, status)
        return
    except LeaseLost as lost:
        await _stopped(worker, st, value, lost.status)
        return
    except asyncio.CancelledError:
        if st.stop_reason is None:
            raise
        await _stopped(worker, st, value, st.stop_reason)
        return
    except Exception as exc:
        await _failed(worker, st, value, exc, final=exc is past_deadline)
        return
    await worker.flush(st)
    fin = Finish(COMPLETED, output=text)
    targets = queue.job_targets.get(job.name)
    fired: list[Any] = []
    if targets:  # job.into triggers: enqueued in the finishing transaction
        fin.children, fin.failures, fired = await queue.triggered(
            targets, job.decode_output(text), rec.id, group=rec.group
        )
    # job.wait_for: storage records this completion as an event, and serves its waiters,
    # in the finishing transaction, only when a waiter for this job exists
    fin.event = CompletionEvent(
        f"job:{rec.id}", f"job:{job.name}", rec.input, text, round(storage.clock(), 6), rec.id
    )
    if fin.failures:  # logged in the finishing transaction: no line without its finish
        fin.logs = [
            LogRecord(rec.id, f.at, f"trigger of job {f.job!r} failed: {f.error}")
            for f in fin.failures
        ]

    def finish() -> Awaitable[bool]:
        return storage.finish(rec.id, worker.id, fin)

    # a finish is safe to repeat: one that committed before a fault hid it is refused the
    # second time (the owner is gone), changing nothing, and its children are enqueued
    # only by the finish that holds (they are stored once per id besides); tried once
    # directly, the retries' set-up only after a fault
    try:
        held = await finish()
    except StorageError:
        held = await st.through_outage(finish, "finish")
    if held:
        st.settled = True
        _ended(worker, st, COMPLETED)
        if queue.watcher.waiting(rec.id):
            done = rec.copy(status=COMPLETED, output=text, completed_at=storage.clock(), owner=None)
            queue.watcher.finished(done)
        if targets:
            await _after_output_triggers(worker, rec.id, fin, fired)
        await queue.fire(job, "success", rec.id, value, out)
        await queue.fire(job, "settled", rec.id, value, COMPLETED)


async def _after_output_triggers(
    worker: Worker, execution_id: str, fin: Finish, fired: list[Any]
) -> None:
    """Hooks for what the output triggered; failed triggers (already in the execution's
    log, written by the finish) also go to the worker's log."""
    await worker.queue.after_trigger(fin.children, fired)
    for line in fin.logs:
        log.warning("qanat: execution %s: %s", execution_id, line.message)


async def _stopped(worker: Worker, st: ExecState, value: Any, why: str | None) -> None:
    """The handler was interrupted from outside: cancelled, shut down, or taken over."""
    if why == "shutdown":
        await worker.flush(st)  # its log lines and progress, while it still owns it
        if st.pause_requested:  # a pause asked for meanwhile takes effect at this boundary
            await worker.storage.suspend(st.id, worker.id, PAUSED, None)
        else:
            await worker.storage.release(worker.id, [st.id])
        end_attempt(st.span, PAUSED if st.pause_requested else "released")
        return
    if why != "cancelled":
        end_attempt(st.span, why or "lost")  # released or taken over: the attempt ends
    else:
        _ended(worker, st, CANCELLED)
        await worker.queue.fire(st.job, "cancel", st.id, value, st.record.reason or "cancelled")
        await worker.queue.fire(st.job, "settled", st.id, value, CANCELLED)
        rec = await worker.storage.get(st.id)
        if rec is not None:
            worker.queue.watcher.finished(rec)


async def _failed(
    worker: Worker, st: ExecState, value: Any, exc: Exception, *, final: bool = False
) -> None:
    rec, job = st.record, st.job
    await worker.flush(st)
    # an output over max_payload would be so again: retrying cannot help
    final = (
        final
        or isinstance(exc, NonRetryable | NonDeterminism | PayloadTooLarge)
        or rec.attempt >= rec.max_attempts
    )
    if isinstance(exc, RetryAfter) and rec.attempt < rec.max_attempts:
        final = False
    if final:
        await _final_failure(worker, st, value, exc)
        return
    if isinstance(exc, RetryAfter) and isinstance(exc.delay, datetime):
        due = to_timestamp(exc.delay)
    else:
        # a due time other hosts compare: from the storage's clock (one read per retry)
        at = await worker.storage.now()
        if isinstance(exc, RetryAfter):
            assert not isinstance(exc.delay, datetime)
            due = at + parse_duration(exc.delay)
        else:
            due = at + backoff_delay(job.backoff, rec.attempt, job.input_for_hooks(value))
    fin = Finish(PENDING, error=encode_error(exc), attempt=rec.attempt + 1, available_at=due)
    if await st.through_outage(lambda: worker.storage.finish(rec.id, worker.id, fin), "retry"):
        st.settled = True
        _ended(worker, st, "retry", exc)
        worker.wake_at(due)
        await worker.queue.fire(job, "error", rec.id, value, exc)
        await worker.queue.fire(job, "retry", rec.id, value, exc)


async def _final_failure(worker: Worker, st: ExecState, value: Any, exc: Exception) -> None:
    rec, job = st.record, st.job
    text = encode_error(exc)
    fin = Finish(FAILED, error=text)
    if await st.through_outage(lambda: worker.storage.finish(rec.id, worker.id, fin), "finish"):
        st.settled = True
        _ended(worker, st, FAILED, exc)
        worker.queue.watcher.finished(
            rec.copy(status=FAILED, error=text, completed_at=worker.storage.clock())
        )
        if value is not None:
            await worker.queue.fire(job, "error", rec.id, value, exc)
            await worker.queue.fire(job, "failure", rec.id, value, exc)
            await worker.queue.fire(job, "settled", rec.id, value, FAILED)


def _ended(worker: Worker, st: ExecState, status: str, error: Exception | None = None) -> None:
    """An attempt's end, once stored: the metrics (when on) and the attempt's span learn
    it. ``status`` is the final one, or ``retry``."""
    metrics = worker.queue.metrics
    if metrics is not None:
        if status == "retry":
            metrics.on_retry(st.job.name)
        else:
            started = st.record.started_at
            took = None if started is None else worker.storage.clock() - started
            metrics.on_finish(st.job.name, status, took)
    end_attempt(st.span, status, error)


def _worker_lost(st: ExecState, limit: int) -> WorkerLost:
    """The error of a poison pill: how many workers it took down, and in which step (the
    one recorded by ``enter_step`` or, when none was, where its last checkpoint left it)."""
    rec = st.record
    if rec.step_in_flight is not None:
        where = f"in step {rec.step_in_flight!r}"
    else:
        done = sorted(st.memo.values(), key=lambda s: s.finished_at)
        where = (
            f"after step {done[-1].key!r} (the step in flight was not recorded)"
            if done
            else "before its first step completed"
        )
    return WorkerLost(
        f"execution {rec.id} of job {rec.job!r}: {rec.recoveries} workers died (or lost "
        f"their lease) running it {where}, with no checkpoint in between; it is failed "
        f"instead of being run again (Queue(max_recoveries={limit}))"
    )
