"""The records the storage contract stores and returns, the execution statuses, and
the cursors of newest-first pages. The contract itself is ``qanat.storage.base``.

Times are floats: seconds since the epoch (UTC). Payloads (input, output, step
results, errors) are JSON text produced by the codec above the storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"
PAUSED = "paused"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
SKIPPED = "skipped"

STATUSES = (PENDING, RUNNING, WAITING, PAUSED, COMPLETED, FAILED, CANCELLED, SKIPPED)
LIVE_STATUSES = (PENDING, RUNNING, WAITING, PAUSED)
FINISHED_STATUSES = (COMPLETED, FAILED, CANCELLED, SKIPPED)


@dataclass(slots=True)
class ExecutionRecord:
    """One execution of a job with one input, as stored."""

    id: str
    job: str
    input: str
    status: str = PENDING
    priority: int = 0
    key: str | None = None
    group: str | None = None
    parent_id: str | None = None
    attempt: int = 1
    max_attempts: int = 3
    created_at: float = 0.0
    run_at: float = 0.0
    available_at: float | None = 0.0
    deadline: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    owner: str | None = None
    output: str | None = None
    error: str | None = None
    reason: str | None = None
    progress: str | None = None
    pause_requested: bool = False
    claims: int = 0
    #: Flow-control rules with their keys (``qanat.storage.flow.FlowSpec`` as JSON).
    flow: str | None = None
    #: The concurrency-window gate whose slot this execution holds while running.
    slot: str | None = None
    #: The gate a due execution is parked behind (``available_at`` is None meanwhile).
    gate: str | None = None
    #: Claims that took it from an owner that never let it go (the worker died or lost
    #: its lease) since its last checkpoint: a poison pill's count (``WorkerLost``).
    recoveries: int = 0
    #: The step a recovered execution was about to run when last claimed (``enter_step``),
    #: so the ``WorkerLost`` of a poison pill can name the step that kills its workers.
    step_in_flight: str | None = None
    #: The trace context of the code that started it (W3C ``traceparent`` and friends, as
    #: a JSON object of propagation headers), restored by the worker (SPEC §14).
    trace: str | None = None

    def copy(self, **changes: Any) -> ExecutionRecord:
        """A copy with some fields changed (without ``dataclasses.replace``: this is hot)."""
        new: ExecutionRecord = _copy_record(self)
        for name, value in changes.items():
            setattr(new, name, value)
        return new


_EXECUTION_FIELDS = tuple(f.name for f in fields(ExecutionRecord))


def _make_copier() -> Any:
    args = ", ".join(f"r.{n}" for n in _EXECUTION_FIELDS)
    ns: dict[str, Any] = {"ExecutionRecord": ExecutionRecord}
    exec(f"def _copy_record(r):\n    return ExecutionRecord({args})\n", ns)
    return ns["_copy_record"]


_copy_record = _make_copier()


@dataclass(slots=True)
class StepRecord:
    """A checkpointed step of an execution, keyed by name plus occurrence."""

    execution_id: str
    key: str
    kind: str
    name: str
    status: str  # "completed" or "failed"
    result: str | None = None
    error: str | None = None
    attempts: int = 1
    job_attempt: int = 1
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass(slots=True)
class LogRecord:
    """One line of an execution's log."""

    execution_id: str
    at: float
    message: str
    fields: str | None = None
    step: str | None = None


@dataclass(slots=True)
class ExecutionFilter:
    """Which executions a query returns; every field is optional and they combine with AND."""

    ids: Sequence[str] | None = None
    job: Sequence[str] | None = None
    status: Sequence[str] | None = None
    group: str | None = None
    parent_id: str | None = None
    started_before: float | None = None
    started_after: float | None = None
    completed_before: float | None = None
    completed_after: float | None = None
    attempts: int | None = None
    attempts_lt: int | None = None
    attempts_gt: int | None = None


@dataclass(slots=True)
class Page:
    """A page of executions, newest first, and the cursor of the next page (None at the end)."""

    items: list[ExecutionRecord]
    cursor: str | None


@dataclass(slots=True)
class Finish:
    """What a worker records when an attempt ends.

    ``status`` is ``completed``/``failed``/``cancelled`` for a final outcome, or
    ``pending`` for a retry due at ``available_at`` (``attempt`` is then the next one).
    """

    status: str
    output: str | None = None
    error: str | None = None
    attempt: int | None = None
    available_at: float | None = None
    reason: str | None = None
    #: With ``completed``: executions its output triggers (``job.into``), enqueued in the
    #: same transaction, and the triggers that could not be built. Ignored otherwise.
    children: list[ExecutionRecord] = field(default_factory=list)
    failures: list[TriggerFailure] = field(default_factory=list)
    #: With ``completed``: the completion as an event on the pseudo-pipe ``job:<name>``
    #: (data ``{"input": ..., "output": ...}``) for ``job.wait_for``. Stored and served
    #: to waiters (as ``send`` does) in the same transaction, but only if an open waiter
    #: of that pseudo-pipe exists; otherwise ignored.
    event: EventRecord | None = None
    #: Log lines of the execution written in the same transaction (e.g. its failed
    #: triggers), so lines about a finish exist exactly when the finish does.
    logs: list[LogRecord] = field(default_factory=list)


@dataclass(slots=True)
class TriggerFailure:
    """A trigger that could not start its job: the transform raised or its result was not
    valid input. ``source`` is the event id (pipe triggers) or the id of the execution
    whose output was the trigger (``job.into``)."""

    source: str
    job: str
    error: str
    at: float = 0.0


@dataclass(slots=True)
class EventRecord:
    """An event sent on a pipe, with what it triggered (filled in by the storage)."""

    id: str
    pipe: str
    data: str
    sent_at: float
    source: str | None = None  # the execution that sent it, if a job did
    executions: list[str] = field(default_factory=list)
    failures: list[TriggerFailure] = field(default_factory=list)
    woke: list[str] = field(default_factory=list)  # executions whose dict waiters got it


class CompletionEvent(EventRecord):
    """A job's completion as an event on ``job:<name>`` (for ``job.wait_for``).

    Its data, ``{"input": ..., "output": ...}``, is joined from the two JSON texts when
    first read, that is only when storage records it because the job has waiters: a
    finish does not copy a large input and output for nothing.
    """

    __slots__ = ("_joined", "_parts")

    def __init__(
        self, id: str, pipe: str, input: str, output: str, sent_at: float, source: str
    ) -> None:
        self._parts = (input, output)
        self._joined: str | None = None
        super().__init__(id, pipe, "", sent_at, source)

    @property
    def data(self) -> str:
        if self._joined is None:
            self._joined = f'{{"input":{self._parts[0]},"output":{self._parts[1]}}}'
        return self._joined

    @data.setter
    def data(self, value: str) -> None:
        if value:  # EventRecord.__init__ sets "" here
            self._joined = value


@dataclass(slots=True)
class EventPage:
    """A page of events, newest first, and the cursor of the next page (None at the end)."""

    items: list[EventRecord]
    cursor: str | None


@dataclass(slots=True)
class Checkpoint:
    """A step result, plus the children it starts, written in one transaction."""

    step: StepRecord
    children: list[ExecutionRecord] = field(default_factory=list)


@dataclass(slots=True)
class Waiter:
    """An execution waiting in ``pipe.wait_for`` at step ``key``.

    ``shape``/``value`` are the indexable form of a dict match (see
    ``qanat.storage.matching``); both None for a predicate waiter, which every send on
    its pipe wakes (``pokes + 1``) to evaluate its predicate on the events since it
    began. ``event_id`` is the delivered event of a dict waiter (set once, by a send).
    """

    execution_id: str
    key: str
    pipe: str
    shape: str | None
    value: str | None
    since: float
    deadline: float | None = None
    event_id: str | None = None
    pokes: int = 0
    data: str | None = None  # the delivered event's data (JSON text)


@dataclass(slots=True)
class WaitState:
    """What ``Storage.wait`` found: why the owner must stop (or None), the stored waiter,
    and whether the execution was suspended."""

    stop: str | None
    waiter: Waiter | None
    suspended: bool


@dataclass(slots=True)
class Stats:
    """Counts for ``queue.stats()``."""

    by_status: dict[str, int]
    by_job: dict[str, dict[str, int]]
    retries: int
    mean_runtime: float | None
    p95_runtime: float | None


def encode_cursor(created_at: float, execution_id: str) -> str:
    """The cursor that points just after this execution in newest-first order."""
    return f"{created_at!r}|{execution_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Split a cursor made by ``encode_cursor``; ValueError if it was not made there."""
    at, _, ident = cursor.partition("|")
    if not ident:
        raise ValueError(f"invalid cursor {cursor!r}")
    return float(at), ident
