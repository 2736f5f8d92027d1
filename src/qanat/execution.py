"""The ``Execution`` handle: one run of a job with one input."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qanat import codec
from qanat.errors import Cancelled, QanatError, Skipped
from qanat.failures import decode_error, error_fields
from qanat.steps.state import blocked, current_or_none
from qanat.storage.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    LIVE_STATUSES,
    PAUSED,
    PENDING,
    RUNNING,
    SKIPPED,
    WAITING,
    ExecutionFilter,
    ExecutionRecord,
)
from qanat.views import LogLine, Progress, StepInfo, parse_progress

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat")


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


#: What ``Execution.control`` and the bulk actions of ``queue.executions`` do.
ACTIONS = ("cancel", "pause", "resume", "retry")
#: The statuses each action can apply to (a bulk action looks at these only).
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "cancel": LIVE_STATUSES,
    "pause": (PENDING, RUNNING, WAITING),
    "resume": (PAUSED, RUNNING, WAITING),  # running and waiting ones: a pause request
    "retry": (FAILED, CANCELLED),
}


def refusal(action: str, rec: ExecutionRecord) -> str | None:
    """Why ``action`` cannot apply to an execution in ``rec``'s state, as a sentence, or
    None when it can. The one copy of these rules: the handle, the bulk actions and the
    CLI all come here."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; actions are: {', '.join(ACTIONS)}")
    what = f"execution {rec.id} is {rec.status}"
    if action == "cancel" and rec.status not in LIVE_STATUSES:
        return f"{what}; only live executions can be cancelled"
    if action == "pause" and rec.status in FINISHED_STATUSES:
        return f"{what}; only live executions can be paused"
    if action == "resume" and rec.status != PAUSED and not rec.pause_requested:
        return f"{what}, not paused"
    if action == "retry" and rec.status not in (FAILED, CANCELLED):
        return f"{what}; only failed or cancelled executions can be retried"
    return None


def has_effect(action: str, rec: ExecutionRecord) -> bool:
    """Whether ``action``, allowed on ``rec``, would change it (pausing a paused one, or
    one already asked to pause, changes nothing)."""
    if action == "pause":
        return rec.status != PAUSED and not rec.pause_requested
    return refusal(action, rec) is None


@dataclass(frozen=True)
class Control:
    """What ``Execution.control`` did: whether it changed the execution, why it refused
    (or None), and the status after the call (None if the execution does not exist)."""

    changed: bool
    refused: str | None
    status: str | None


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
            # inside a job: waiting on another execution frees this one's slot
            async with blocked(st):
                st.boundary()
                rec = await self._queue.watcher.wait(self.id, timeout)
        return self._queue.outcome(rec)

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel it (and its live children); True if it was live."""
        return (await self.control("cancel", reason)).changed

    async def pause(self) -> str | None:
        """Pause at the next step boundary; returns the status after the request."""
        return (await self.control("pause")).status

    async def resume(self) -> str | None:
        """Resume a paused execution; returns the status after the request."""
        return (await self.control("resume")).status

    async def retry(self) -> bool:
        """Run a failed or cancelled execution again from the start; False if it isn't one."""
        return (await self.control("retry")).changed

    async def control(self, action: str, reason: str | None = None) -> Control:
        """Apply ``action`` (``cancel``, ``pause``, ``resume`` or ``retry``) if its rules
        allow it for the current status (see ``refusal``); ``reason`` goes with a cancel."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; actions are: {', '.join(ACTIONS)}")
        storage = self._queue.storage
        rec = await storage.get(self.id)
        if rec is None:
            return Control(False, f"execution {self.id} does not exist", None)
        refused = refusal(action, rec)
        if refused is not None:
            return Control(False, refused, rec.status)
        if not has_effect(action, rec):
            return Control(False, None, rec.status)
        if action == "cancel":
            status: str | None = (
                CANCELLED if await apply(self._queue, action, [rec], reason) else None
            )
        else:
            status = await _act(self._queue, action, self.id)
            self._queue.notify_local()
            if status is not None:
                await _fire_control(self._queue, action, rec, status)
        if status is not None:  # as storage reported it, before any worker acts on it
            return Control(True, None, status)
        after = await storage.get(self.id)  # it changed under us: say how it is now
        if after is None:
            return Control(False, f"execution {self.id} does not exist", None)
        return Control(False, refusal(action, after), after.status)

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


async def apply(
    queue: Queue, action: str, records: Sequence[ExecutionRecord], reason: str | None = None
) -> int:
    """Apply ``action`` to executions that ``refusal`` and ``has_effect`` let it change (as
    read in ``records``); returns how many it changed (a cancel counts the live children
    it cancelled too). Storage decides again atomically, so a record that changed since
    it was read is left alone."""
    todo = [r for r in records if refusal(action, r) is None and has_effect(action, r)]
    if not todo:
        return 0
    if action == "cancel":  # one transaction for the lot, cascading to children
        return await queue.cancel_ids([r.id for r in todo], reason)
    after = await asyncio.gather(*(_act(queue, action, r.id) for r in todo))
    queue.notify_local()  # resumed and retried ones are due now
    for r, st in zip(todo, after, strict=True):
        if st is not None:
            await _fire_control(queue, action, r, st)
    return sum(st is not None for st in after)


async def _fire_control(queue: Queue, action: str, rec: ExecutionRecord, status: str) -> None:
    """The global ``pause``/``resume`` hooks, once storage took the request (payload
    ``detail``: the status right after it: ``paused``, or a running one asked to pause)."""
    if action not in ("pause", "resume") or not queue.has_hooks(action):
        return
    j = queue.registry.get(rec.job)
    if j is None:
        return
    try:
        value = j.decode_input(rec.input)
    except Exception:  # an input that no longer validates must not fail the action
        log.exception("qanat: %s hook: input of execution %s did not decode", action, rec.id)
        return
    await queue.fire(j, action, rec.id, value, status)


async def _act(queue: Queue, action: str, execution_id: str) -> str | None:
    """Pause, resume or retry one execution; the status storage reports right after it,
    or None if storage changed nothing (it is gone, or finished meanwhile)."""
    storage = queue.storage
    if action == "retry":
        got = await storage.restart(execution_id, queue.clock())
        return None if got is None else got.status
    st = await (storage.pause if action == "pause" else storage.resume)(execution_id)
    return None if st is None or st in FINISHED_STATUSES else st


async def apply_matching(
    queue: Queue, action: str, flt: ExecutionFilter, reason: str | None, page_size: int
) -> int:
    """Apply ``action`` to every execution matching ``flt`` (narrowed to the statuses it
    applies to), a page of ``page_size`` at a time: never all rows at once, and each
    page's writes are one bounded batch. Returns how many it changed.

    Pages follow the newest-first cursor, so executions that an action creates or moves
    (children, retried ones) are not visited twice."""
    allowed = APPLIES_TO[action]
    statuses = [s for s in (flt.status or allowed) if s in allowed]
    if not statuses:
        return 0
    flt = replace(flt, status=statuses)
    changed = 0
    cursor: str | None = None
    while True:
        page = await queue.storage.query(flt, page_size, cursor)
        changed += await apply(queue, action, page.items, reason)
        if page.cursor is None:
            return changed
        cursor = page.cursor


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
