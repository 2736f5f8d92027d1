"""The worker: claims executions, runs them, renews their leases, drains on shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qanat._aio import raise_if_cancelled, wait_event
from qanat._ids import new_id
from qanat.engine.cron import CronScheduler
from qanat.engine.isolate import ProcessPool
from qanat.engine.runner import execute
from qanat.engine.threads import DaemonThreadPool
from qanat.errors import LeaseLost
from qanat.steps.state import ExecState
from qanat.storage.base import (
    CANCELLED,
    PAUSED,
    RUNNING,
    WAITING,
    ExecutionRecord,
    LogRecord,
    Storage,
)

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat")

DEFAULT_CONCURRENCY = 100
#: Sleeps shorter than this stay in memory; longer ones free the worker and replay later.
HOT_SLEEP = 5.0
#: Without any signal, look for due work this often (delayed executions, lapsed leases).
FALLBACK_POLL = 0.25
#: How often, at most, to look for cancels and pauses made by other processes.
CONTROL_EVERY = 0.1
#: At the end of a stop, how long interrupted executions get to release themselves.
STOP_WAIT = 1.0
#: the housekeeping loop's period, and the lease of its elected leader (``lead``): a
#: dead leader is replaced within LEAD_LEASE + HOUSEKEEPING_EVERY seconds
HOUSEKEEPING_EVERY = 2.0
LEAD_LEASE = 10.0
HOUSEKEEPING = "housekeeping"


class Worker:
    """Runs a queue's executions in this process until stopped."""

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int | None = None,
        lease: float = 30.0,
        sync_threads: int | None = None,
        hot_sleep: float = HOT_SLEEP,
    ) -> None:
        self.queue = queue
        self.storage: Storage = queue.storage
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.host = socket.gethostname()
        self.capacity = concurrency or DEFAULT_CONCURRENCY
        self.lease = lease
        self.hot_sleep = hot_sleep
        self.batch = max(1, min(self.capacity, 256))
        self._threads = DaemonThreadPool(
            sync_threads or min(32, (os.cpu_count() or 1) + 4), "qanat-job"
        )
        self.active: dict[str, ExecState] = {}
        self._blocked: dict[str, int] = {}
        self._reserved = 0
        self._pending_io: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self._wake = asyncio.Event()
        #: the last claim was bounded by free slots (or skipped for want of one): a slot
        #: freed may let more be claimed now; otherwise nothing claimable was left then,
        #: and new work rings the ticker itself
        self._slot_bound = True
        self._next_due: float | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._processes: ProcessPool | None = None  # for thread steps, made on first use
        #: Jobs paused in storage, as last read (the control loop refreshes it on every
        #: change): ``adopt`` passes over them. Claims decide from storage itself.
        self.paused_jobs: set[str] = set()
        self.cron = CronScheduler(self)

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Register, reclaim work of dead processes on this host, start the loops."""
        self.loop = asyncio.get_running_loop()
        await self.storage.register_worker(self.id, self.host, os.getpid(), self.storage.clock())
        self.paused_jobs = await self.storage.paused_jobs()
        await self.reclaim_dead()
        self.queue.ticker.start()
        self.cron.started = self.storage.clock()
        self._tasks = [
            self.loop.create_task(self._claim_loop(), name="qanat-claim"),
            self.loop.create_task(self._heartbeat_loop(), name="qanat-heartbeat"),
            self.loop.create_task(self._housekeeping_loop(), name="qanat-housekeeping"),
            self.loop.create_task(self._control_loop(), name="qanat-control"),
            self.loop.create_task(self.cron.run(), name="qanat-cron"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming and release every execution this worker holds, at a step boundary.

        Each running execution finishes the step in flight and is released at its next
        step boundary (``ExecState.boundary``); one that returns instead completes as
        usual. Executions held in memory without running a step (a short sleep, awaiting
        a child) are released at once. What still runs when ``grace`` seconds have
        passed is interrupted and released. Released executions are ``pending`` and due
        at once for any worker, which replays them from their last checkpoint.
        """
        self._stopping = True
        claim = self._tasks[0] if self._tasks else None
        if claim is not None:
            claim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claim
        for st in list(self.active.values()):
            # held in memory (a short sleep, awaiting a child) or between a step's
            # attempts: nothing of a step runs now, so it is released at once
            if st.id in self._blocked or st.idle:
                self._interrupt(st, "shutdown")
        running = [st.task for st in self.active.values() if st.task is not None]
        if running:
            await asyncio.wait(running, timeout=grace)
        for st in list(self.active.values()):
            self._interrupt(st, "shutdown")
        left = [st.task for st in self.active.values() if st.task is not None]
        if left:
            # cancelled tasks release themselves (runner._stopped); a plain step's thread
            # cannot be stopped, but its task ends at once and the thread is a daemon
            await asyncio.wait(left, timeout=STOP_WAIT)
        stuck = list(self.active)
        if stuck:  # a handler that swallowed the cancel: release it all the same
            log.warning("qanat: %d executions did not stop; releasing them", len(stuck))
            with contextlib.suppress(Exception):
                await self.storage.release(self.id, stuck)
        for t in self._tasks[1:]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.storage.resign(HOUSEKEEPING, self.id)  # another worker takes over now
        with contextlib.suppress(Exception):
            await self.storage.unregister_worker(self.id)
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown()  # kills its children
            self._processes = None

    @property
    def stopping(self) -> bool:
        """True once ``stop`` began: executions leave at their next step boundary."""
        return self._stopping

    def _interrupt(self, st: ExecState | None, why: str) -> None:
        """Cancel an execution's task; the runner ends it according to ``why``."""
        if st is not None and st.task is not None and not st.task.done():
            st.stop_reason = why
            st.task.cancel()
            for step in list(st.loop_steps):  # a plain handler's async steps
                step.cancel()

    # --- signals from elsewhere in this process -------------------------------------

    def notify_local(self) -> None:
        """New work was enqueued by this process: look for it now."""
        self._wake.set()

    def wake_at(self, at: float) -> None:
        """Something becomes due at ``at``: look again then."""
        if self._next_due is None or at < self._next_due:
            self._next_due = at
            self._wake.set()

    def block(self, st: ExecState, delta: int) -> None:
        """Count an execution as waiting on a child (not holding a slot) or not."""
        before = self._blocked.get(st.id, 0)
        n = before + delta
        if n > 0:
            self._blocked[st.id] = n
        else:
            self._blocked.pop(st.id, None)
        if (before == 0) != (n == 0) and st.stop_reason is None:
            self._io(st, self.storage.mark(st.id, self.id, WAITING if n else RUNNING))
        if delta > 0:
            self._wake.set()

    async def unblock(self, st: ExecState) -> None:
        """The execution stops waiting: count it as running again. One holding a slot of a
        concurrency window waits here until storage gives it a slot back."""
        if st.record.slot is None or self._blocked.get(st.id, 0) != 1 or st.stop_reason:
            self.block(st, -1)
            return
        self._blocked.pop(st.id, None)
        await self.flush(st)  # its "waiting" mark is stored before it asks for "running"
        ticker = self.queue.ticker
        while st.stop_reason is None:
            if self._stopping:  # released here rather than take a slot back
                st.stop_reason = "shutdown"
                raise LeaseLost("shutdown")
            ev = ticker.event()
            if await self.storage.mark(st.id, self.id, RUNNING):
                return
            await wait_event(ev, FALLBACK_POLL)

    def free_slots(self) -> int:
        return self.capacity - (len(self.active) - len(self._blocked)) - self._reserved

    def adopt(self, rec: ExecutionRecord) -> bool:
        """Mark a record about to be enqueued by this process as already claimed by this
        worker, when it has a free slot: it is stored claimed, in the enqueue's own
        transaction, and runs here without a claim round trip. ``spawn_adopted`` (after
        the commit) or ``unadopt`` (if it was not stored) must follow."""
        # the estimate (``Storage.clock``) for a lease end written from here: the
        # heartbeat rewrites it from the storage's clock within ``lease / 3``
        at = self.storage.clock()
        if self._stopping or rec.job not in self.queue.registry or self.free_slots() <= 0:
            return False
        if rec.flow is not None:  # flow control is decided by the claim, in storage
            return False
        if rec.job in self.paused_jobs:  # it waits as pending until the job is resumed
            return False
        if rec.available_at is None or rec.available_at > at:
            return False
        rec.status = RUNNING
        rec.owner = self.id
        rec.available_at = at + self.lease
        rec.claims = 1
        rec.started_at = at
        self._reserved += 1
        return True

    def unadopt(self) -> None:
        """An adopted record was not stored after all: give its slot back."""
        self._reserved -= 1

    def spawn_adopted(self, adopted: ExecutionRecord, stored: ExecutionRecord) -> None:
        """Run an adopted record now that its enqueue committed (unless a key matched an
        existing execution, which then stays where it is)."""
        self._reserved -= 1
        if stored.id == adopted.id and not self._stopping:
            self._spawn(adopted)

    # --- claiming ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self.loop is not None
        jobs = list(self.queue.registry)
        ticker = self.queue.ticker
        forced = True
        failures = 0
        blind = self.storage.claims_without_asking
        while not self._stopping:
            ev = ticker.event()
            # a local signal or a timer means "claim"; a storage change alone (often our
            # own commits) first asks cheaply whether anything is claimable at all,
            # unless a claim that finds nothing is as cheap as asking (``blind``)
            forced = forced or self._wake.is_set()
            self._wake.clear()
            free = self.free_slots()
            recs: list[ExecutionRecord] = []
            try:
                clock = self.storage.clock()
                if free > 0 and (forced or blind or await self.storage.has_ready(jobs, clock)):
                    # at=None: due times and lease ends from the storage's own clock
                    recs = await self.storage.claim(
                        self.id, jobs, min(free, self.batch), self.lease
                    )
                failures = 0
            except Exception:
                # storage unreachable (a server restart, a network cut): say so, back
                # off (0.5 s doubling up to 8 s) and keep trying; this loop must not die
                log.exception("qanat: claiming executions failed")
                await asyncio.sleep(min(8.0, 0.5 * 2**failures))
                failures += 1
                forced = True
                continue
            got = len(recs)
            self._slot_bound = free <= 0 or got >= min(free, self.batch)
            for rec in recs:
                self._spawn(rec)
            if self.storage.next_wake is not None:
                self.wake_at(self.storage.next_wake)
            forced = False
            if got and got == min(free, self.batch):
                forced = True
                await asyncio.sleep(0)
                continue
            timeout = FALLBACK_POLL
            if self._next_due is not None:
                timeout = max(0.0, min(timeout, self._next_due - self.storage.clock()))
                if timeout == 0.0:
                    self._next_due = None
            wake = self.loop.create_task(self._wake.wait())
            tick = self.loop.create_task(ev.wait())
            try:
                done, _ = await asyncio.wait(
                    (wake, tick), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                wake.cancel()
                tick.cancel()
            if not done:
                forced = True

    def _spawn(self, rec: Any) -> None:
        assert self.loop is not None
        job = self.queue.registry[rec.job]
        st = ExecState(rec, job, self)
        self.active[rec.id] = st
        st.task = self.loop.create_task(execute(self, rec, st), name=f"qanat-{rec.job}-{rec.id}")
        st.task.add_done_callback(functools.partial(self._done, st))

    def _done(self, st: ExecState, task: asyncio.Task[Any]) -> None:
        self.active.pop(st.id, None)
        self._blocked.pop(st.id, None)
        self._pending_io.pop(st.id, None)
        self.queue.watcher.follow(st.id)  # waits on it here, if it left unfinished
        if not task.cancelled() and task.exception() is not None:
            log.error("qanat: execution %s crashed in the engine", st.id, exc_info=task.exception())
        if self._slot_bound and (self.free_slots() >= max(1, self.batch // 4) or not self.active):
            self._wake.set()

    # --- leases -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.lease / 3)
        while True:
            raise_if_cancelled()
            await asyncio.sleep(interval)
            ids = list(self.active)
            if not ids:
                continue
            try:
                stops = await self.storage.renew(self.id, ids, self.lease)
            except Exception:
                log.exception("qanat: renewing leases failed")
                continue
            for ident, why in stops.items():
                st = self.active.get(ident)
                if st is None:
                    continue
                if why == "paused":
                    st.pause_requested = True
                else:
                    self._interrupt(st, why)

    async def _control_loop(self) -> None:
        """Notice cancels, pauses and paused jobs made by other processes soon after they
        commit.

        The heartbeat would notice too, but only every lease/3; this reads (never writes)
        the paused jobs and the active executions when storage changed, at most every
        ``CONTROL_EVERY``.
        """
        ticker = self.queue.ticker
        while True:
            raise_if_cancelled()
            await ticker.event().wait()
            with contextlib.suppress(Exception):
                self.paused_jobs = await self.storage.paused_jobs()
            ids = [i for i, st in self.active.items() if st.stop_reason is None]
            if ids:
                try:
                    recs = await self.storage.get_many(ids, payloads=False)
                except Exception:
                    recs = []
                for rec in recs:
                    st = self.active.get(rec.id)
                    if st is None or rec.owner != self.id:
                        continue
                    if rec.pause_requested or rec.status == PAUSED:
                        st.pause_requested = True
                    elif rec.status == CANCELLED:
                        st.record.reason = rec.reason
                        self._interrupt(st, "cancelled")
            await asyncio.sleep(CONTROL_EVERY)

    async def reclaim_dead(self) -> int:
        """Make the executions of dead worker processes on this host claimable at once."""
        n = 0
        for worker_id, pid in await self.storage.workers(self.host):
            if worker_id != self.id and not _alive(pid):
                n += await self.storage.expire_owner(worker_id)
        if n:
            self._wake.set()
        return n

    async def _housekeeping_loop(self) -> None:
        """Every worker reclaims the work of dead processes on its host; the rest (gate
        refill, retention, cron catch-up) is done by one elected worker (``lead``)."""
        ticks = 0
        leading = False
        while True:
            raise_if_cancelled()
            try:
                was_leading = leading
                leading = await self.storage.lead(HOUSEKEEPING, self.id, LEAD_LEASE)
                if leading and not was_leading:
                    log.info("qanat: worker %s leads housekeeping", self.id)
                    await self.cron.catch_up_all()
                elif not leading and not ticks:
                    log.info(
                        "qanat: worker %s follows: another worker leads the housekeeping", self.id
                    )
                if ticks:
                    await self.reclaim_dead()
                if leading and await self.storage.refill():
                    self._wake.set()
                if leading and ticks % 30 == 1:
                    await self.queue.apply_retention()
            except Exception:
                log.exception("qanat: housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            ticks += 1

    # --- helpers for the runner and the step functions -----------------------------------

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a plain function in the worker's thread pool, keeping the execution context."""
        assert self.loop is not None
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await self.loop.run_in_executor(self._threads, call)

    def process_pool(self) -> ProcessPool:
        """The pool of child processes for ``thread`` steps (``Queue(threads=)`` of them,
        default the CPU count), started on first use."""
        if self._processes is None:
            self._processes = ProcessPool(self.queue.threads or os.cpu_count() or 1)
        return self._processes

    def _io(self, st: ExecState, coro: Any) -> None:
        # In the order they were made: a backend may run concurrent calls on different
        # connections (Redis, PostgreSQL), and progress 100 must not land before 80.
        loop = self.loop or asyncio.get_running_loop()
        pending = self._pending_io.setdefault(st.id, [])
        fut = asyncio.run_coroutine_threadsafe(_after(pending[-1] if pending else None, coro), loop)
        pending.append(fut)

    def _owner_of(self, st: ExecState) -> str | None:
        """Who a log line or progress of ``st`` is written as: this worker, fenced by its
        claim; once its own finish committed (hooks running), nobody (``None``)."""
        return None if st.settled else self.id

    def log(self, st: ExecState, message: str, fields: dict[str, Any]) -> None:
        line = LogRecord(
            st.id, self.storage.clock(), str(message), json.dumps(fields, default=str) or None
        )
        self._io(st, self.storage.append_logs(self._owner_of(st), [line]))

    def progress(self, st: ExecState, pct: float, message: str | None, details: Any) -> None:
        pct = float(pct)
        if not 0 <= pct <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {pct!r}")
        text = json.dumps({"pct": pct, "message": message, "details": details}, default=str)
        value = {"pct": pct, "message": message, "details": details}
        self._io(st, self._store_progress(st, text, value))

    async def _store_progress(self, st: ExecState, text: str, value: dict[str, Any]) -> None:
        # the hook fires only for progress that was stored: not for a worker's stale claim
        stored = await self.storage.set_progress(st.id, self._owner_of(st), text)
        if stored and self.queue.has_hooks("progress"):
            await self.queue.fire(st.job, "progress", st.id, None, value)

    async def flush(self, st: ExecState) -> None:
        """Wait until the execution's log lines and progress are stored."""
        pending = self._pending_io.pop(st.id, [])
        if pending:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in pending), return_exceptions=True)


async def _after(previous: concurrent.futures.Future[Any] | None, coro: Any) -> Any:
    """Run ``coro`` once ``previous`` (if any) has ended, however it ended."""
    if previous is not None and not previous.done():
        await asyncio.gather(asyncio.wrap_future(previous), return_exceptions=True)
    return await coro


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
