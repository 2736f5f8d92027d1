"""What a running execution knows about itself, found by step functions through a contextvar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from qanat.errors import LeaseLost, NonDeterminism, NotInJob, StorageError, Suspend
from qanat.storage.base import PAUSED, Checkpoint, ExecutionRecord, StepRecord

T = TypeVar("T")

log = logging.getLogger("qanat")

if TYPE_CHECKING:
    from qanat.context import Context
    from qanat.engine.worker import Worker
    from qanat.job import Job


@dataclass(eq=False)
class ExecState:
    """One execution while a worker runs it: its record, memoised steps and step counters."""

    record: ExecutionRecord
    job: Job[Any]
    worker: Worker
    memo: dict[str, StepRecord] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    pause_requested: bool = False
    ctx: Context | None = None
    task: asyncio.Task[Any] | None = None
    suspend_status: str | None = None
    suspend_until: float | None = None
    #: True when a step already suspended the execution in storage (``pipe.wait_for``).
    suspended: bool = False
    #: True while a step waits before an attempt (``between_attempts``).
    idle: bool = False
    #: Steps a plain handler runs on the worker's loop (``qanat.sync.run``): tasks of
    #: their own, cancelled with the execution's task.
    loop_steps: set[asyncio.Task[Any]] = field(default_factory=set)
    #: True once this worker's finish of the execution committed: what its hooks log
    #: afterwards is written under no claim (``owner=None``), the claim being over.
    settled: bool = False
    #: The attempt's ``qanat.execution`` span while tracing is on (``observability``).
    span: Any = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def attempt(self) -> int:
        return self.record.attempt

    def next_key(self, name: str) -> str:
        """The key of the next step called ``name``: ``name``, then ``name#2``, ``name#3``..."""
        n = self.counters.get(name, 0) + 1
        self.counters[name] = n
        return name if n == 1 else f"{name}#{n}"

    def recorded(self, key: str, kind: str, name: str) -> StepRecord | None:
        """The recorded step at ``key``; NonDeterminism if it was of another kind or name."""
        rec = self.memo.get(key)
        if rec is not None and (rec.kind != kind or rec.name != name):
            raise NonDeterminism(
                f"execution {self.id} of job {self.record.job!r}: step {key!r} was recorded as "
                f"{rec.kind} {rec.name!r} but the code now calls {kind} {name!r} there; the code "
                "changed under a live execution, so it is failed rather than replayed wrongly"
            )
        return rec

    def boundary(self) -> None:
        """A step boundary: leave now if stopped, a pause was requested or the worker is
        shutting down (the runner then releases the execution; its checkpoints stay)."""
        if self.stop_reason is not None:
            raise LeaseLost(self.stop_reason)
        if self.pause_requested:
            self.suspend_status = PAUSED
            raise Suspend("paused")
        if self.worker.stopping:
            self.stop_reason = "shutdown"
            raise LeaseLost("shutdown")

    @contextlib.contextmanager
    def between_attempts(self) -> Iterator[None]:
        """A step waits before its next attempt (a retry's backoff, a step ``concurrency``
        slot). Nothing of the step runs meanwhile, so a stop releases the execution here
        at once rather than at the end of the wait (``Worker.stop`` interrupts it)."""
        if self.worker.stopping:
            self.stop_reason = "shutdown"
            raise LeaseLost("shutdown")
        self.idle = True
        try:
            yield
        finally:
            self.idle = False

    async def through_outage(self, write: Callable[[], Awaitable[T]], what: str) -> T:
        """A write this worker makes for the execution, retried with back-off while
        storage is unreachable (a database restart), for up to the worker's lease.

        The worker still owns the execution meanwhile, so once storage is back the write
        goes in and the execution carries on here, rather than failing in the engine and
        being taken over after its lease (a takeover that would count toward
        ``max_recoveries``). Only for writes that are safe to repeat; fencing still
        refuses one that comes after the lease was lost.
        """
        delay, end = 0.25, time.monotonic() + self.worker.lease
        while True:
            try:
                return await write()
            except StorageError as exc:
                if self.stop_reason is not None or time.monotonic() + delay > end:
                    raise
                log.warning(
                    "qanat: execution %s: %s failed (%s); retrying in %.2gs",
                    self.id,
                    what,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)

    async def enter_step(self, key: str) -> None:
        """About to run user code in step ``key``: on a recovered execution (a worker died
        under it), record the step first, so that if it kills this worker too the
        ``WorkerLost`` that ends a poison pill can name it. Free on the normal path."""
        rec = self.record
        if not rec.recoveries or rec.step_in_flight == key:
            return
        if not await self.worker.storage.enter_step(self.id, self.worker.id, key):
            self.stop_reason = "lost"
            raise LeaseLost("lost")
        rec.step_in_flight = key

    async def checkpoint(
        self, step: StepRecord, children: list[ExecutionRecord] | None = None
    ) -> None:
        """Store a step (and children it starts); return once it is committed."""
        cp = Checkpoint(step, children or [])
        worker = self.worker

        def write() -> Awaitable[str | None]:
            return worker.storage.checkpoint(self.id, worker.id, cp)

        # a step record is written insert-or-replace at its key and a child is stored
        # once per id: a retry after a fault that hid whether it committed stores each
        # once (tried once directly: the retries' set-up costs a step in the common case)
        try:
            why = await write()
        except StorageError:
            why = await self.through_outage(write, "checkpoint")
        self.memo[step.key] = step
        if why == "paused":
            self.pause_requested = True
        elif why is not None:
            self.stop_reason = why
            raise LeaseLost(why)


_current: ContextVar[ExecState | None] = ContextVar("qanat_execution", default=None)


def current(what: str) -> ExecState:
    """The running execution, or NotInJob naming the step function that needs one."""
    st = _current.get()
    if st is None:
        raise NotInJob(
            f"qanat.{what}() was called outside a running job; step functions only work "
            "inside a job handler that a qanat worker is running"
        )
    return st


def current_or_none() -> ExecState | None:
    """The running execution, if any."""
    return _current.get()


def set_current(st: ExecState | None) -> Any:
    """Bind an execution to this context; returns the token to reset it."""
    return _current.set(st)


@contextlib.asynccontextmanager
async def blocked(st: ExecState) -> Any:
    """While a job waits on a child (or sleeps in memory), it does not count against the
    worker's capacity nor hold a concurrency slot; it takes one back to continue."""
    st.worker.block(st, +1)
    try:
        yield
    finally:
        await st.worker.unblock(st)
