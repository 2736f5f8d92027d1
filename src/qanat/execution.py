"""The ``Execution`` handle: one run of a job with one input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qanat import codec
from qanat.engine.failures import decode_error, error_fields
from qanat.engine.state import current_or_none
from qanat.errors import Cancelled, QanatError, Skipped
from qanat.storage.base import CANCELLED, COMPLETED, FAILED, SKIPPED, ExecutionRecord

if TYPE_CHECKING:
    from qanat.queue import Queue


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


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


class Execution:
    """A handle on one execution. Cheap to make; every method reads storage afresh."""

    def __init__(self, queue: Queue, id: str, job: str) -> None:
        self._queue = queue
        self.id = id
        self.job = job
        self.info: ExecutionRecord | None = None
        """The record as read when this handle came from a query (a snapshot)."""

    def __repr__(self) -> str:
        return f"<Execution {self.job} {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Execution) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def record(self) -> ExecutionRecord:
        """The stored record (raises ``QanatError`` if it no longer exists)."""
        rec = await self._queue.storage.get(self.id)
        if rec is None:
            raise QanatError(f"execution {self.id} does not exist (or was removed by retention)")
        return rec

    async def status(self) -> str:
        """The current status: pending, running, waiting, paused, completed, ..."""
        return (await self.record()).status

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the execution to finish and return its output.

        Raises its final error, ``qanat.Cancelled``, ``qanat.Skipped``, or
        ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        st = current_or_none()
        if st is None:
            rec = await self._queue.watcher.wait(self.id, timeout)
        else:
            from qanat.engine.runner import blocked

            # inside a job: waiting on another execution frees this one's slot
            async with blocked(st):
                st.boundary()
                rec = await self._queue.watcher.wait(self.id, timeout)
        return self._queue.outcome(rec)

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel it (and its live children); True if it was live."""
        return bool(await self._queue.cancel_ids([self.id], reason))

    async def pause(self) -> str | None:
        """Pause at the next step boundary; returns the status after the request."""
        return await self._queue.storage.pause(self.id)

    async def resume(self) -> str | None:
        """Resume a paused execution; returns the status after the request."""
        st = await self._queue.storage.resume(self.id)
        self._queue.notify_local()
        return st

    async def retry(self) -> bool:
        """Run a failed or cancelled execution again from the start; False if it isn't one."""
        ok = await self._queue.storage.restart(self.id, self._queue.clock()) is not None
        self._queue.notify_local()
        return ok

    def on_progress(self, callback: Callable[[Progress], Any]) -> None:
        """Call ``callback(progress)`` whenever its progress changes (while the queue runs)."""
        self._queue.watcher.on_progress(self.id, callback)

    async def progress(self) -> Progress | None:
        """The latest progress, if any was reported."""
        return parse_progress((await self.record()).progress)

    async def steps(self) -> list[StepInfo]:
        """Its recorded steps, in the order they started."""
        out = []
        for s in await self._queue.storage.steps(self.id):
            out.append(
                StepInfo(
                    s.key,
                    s.kind,
                    s.name,
                    s.status,
                    codec.loads(s.result) if s.result is not None else None,
                    error_fields(s.error) if s.error else None,
                    s.attempts,
                    _dt(s.started_at),
                    _dt(s.finished_at),
                )
            )
        return out

    async def logs(self) -> list[LogLine]:
        """Its log lines in order."""
        return [
            LogLine(_dt(ln.at) or datetime.now(UTC), ln.message, json.loads(ln.fields or "{}"))
            for ln in await self._queue.storage.logs(self.id)
        ]

    async def wait(self, timeout: float | None = None) -> ExecutionRecord:
        """Wait until it is finished, whatever the outcome; the final record."""
        return await self._queue.watcher.wait(self.id, timeout)


def parse_progress(text: str | None) -> Progress | None:
    """The stored progress JSON as a ``Progress``."""
    if not text:
        return None
    data = json.loads(text)
    return Progress(float(data.get("pct", 0)), data.get("message"), data.get("details"))


def outcome_of(rec: ExecutionRecord, decode_output: Callable[[str | None], Any]) -> Any:
    """The output of a finished record, or its error raised."""
    if rec.status == COMPLETED:
        return decode_output(rec.output)
    if rec.status == FAILED:
        raise decode_error(rec.error or "{}", rec.id)
    if rec.status == CANCELLED:
        raise Cancelled(rec.id, rec.reason)
    if rec.status == SKIPPED:
        raise Skipped(rec.reason or "skipped", rec.id)
    raise asyncio.InvalidStateError(f"execution {rec.id} is still {rec.status}")
