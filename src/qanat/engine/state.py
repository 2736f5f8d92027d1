"""What a running execution knows about itself, found by step functions through a contextvar."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qanat.errors import LeaseLost, NonDeterminism, NotInJob, Suspend
from qanat.storage.base import PAUSED, Checkpoint, ExecutionRecord, StepRecord

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

    async def checkpoint(
        self, step: StepRecord, children: list[ExecutionRecord] | None = None
    ) -> None:
        """Store a step (and children it starts); return once it is committed."""
        why = await self.worker.storage.checkpoint(
            self.id, self.worker.id, Checkpoint(step, children or [])
        )
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
