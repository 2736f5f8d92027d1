"""The read-only views of stored records that the client hands out: steps, log lines,
progress, events and failed triggers (``Execution.steps()``, ``queue.events.list``, ...).

They sit low in the package (above the storage records, below the step functions), so
the engine, the client and the CLI all build them the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qanat import codec
from qanat.storage.base import EventRecord, TriggerFailure

if TYPE_CHECKING:
    from qanat.pipe import Pipe

__all__ = [
    "EventInfo",
    "FailedTrigger",
    "LogLine",
    "Progress",
    "StepInfo",
    "event_info",
    "failed_trigger",
    "parse_progress",
]


@dataclass(frozen=True)
class StepInfo:
    """A recorded step, as ``Execution.steps()`` returns it."""

    key: str
    kind: str
    name: str
    status: str
    result: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class LogLine:
    """A line of an execution's log."""

    at: datetime
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """The latest progress an execution reported."""

    pct: float
    message: str | None = None
    details: Any = None


def parse_progress(text: str | None) -> Progress | None:
    """The stored progress JSON as a ``Progress``."""
    if not text:
        return None
    data = json.loads(text)
    return Progress(float(data.get("pct", 0)), data.get("message"), data.get("details"))


@dataclass(frozen=True)
class FailedTrigger:
    """A trigger that did not start its job: the transform raised, or its result was not
    valid input for the job. ``source`` is the event id (or, for ``job.into``, the id of
    the execution whose output was the trigger)."""

    source: str
    job: str
    error: str
    at: datetime


@dataclass(frozen=True)
class EventInfo:
    """A sent event, as ``pipe.send`` returns it and ``queue.events.list`` yields it."""

    id: str
    pipe: str
    data: Any
    sent_at: datetime
    executions: list[str]
    """Ids of the executions the event triggered, in trigger order."""
    failed: list[FailedTrigger]
    """Triggers that could not start their job."""
    source: str | None = None
    """The id of the execution that sent the event, if a job sent it."""
    woke: list[str] = field(default_factory=list)
    """Ids of the executions whose ``wait_for`` (dict match) received the event."""


def failed_trigger(f: TriggerFailure) -> FailedTrigger:
    return FailedTrigger(f.source, f.job, f.error, datetime.fromtimestamp(f.at, UTC))


def event_info(pipe: Pipe[Any] | None, rec: EventRecord) -> EventInfo:
    """The public view of a stored event."""
    data = pipe.decode(rec.data) if pipe is not None else codec.loads(rec.data)
    return EventInfo(
        rec.id,
        rec.pipe,
        data,
        datetime.fromtimestamp(rec.sent_at, UTC),
        list(rec.executions),
        [failed_trigger(f) for f in rec.failures],
        rec.source,
        list(rec.woke),
    )
