"""The events and waiters of ``MemoryStorage``: ``send``, ``events`` and the
``pipe.wait_for`` operations, kept apart from the executions they wake.

A mixin: it keeps the events' and waiters' state; ``MemoryStorage`` supplies the
executions and the helpers declared below.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from qanat.storage.base import (
    PAUSED,
    WAITING,
    Checkpoint,
    EventPage,
    EventRecord,
    ExecutionRecord,
    TriggerFailure,
    Waiter,
    WaitState,
    decode_cursor,
    encode_cursor,
    now,
)
from qanat.storage.matching import project

if TYPE_CHECKING:
    from qanat.storage.memory_flow import MemoryFlow


class MemoryPipes:
    """Events and waiters in dictionaries of this process."""

    _execs: dict[str, ExecutionRecord]
    _flow: MemoryFlow

    if TYPE_CHECKING:  # supplied by MemoryStorage

        def _touch(self) -> None:
            raise NotImplementedError

        def _insert(self, rec: ExecutionRecord) -> ExecutionRecord:
            raise NotImplementedError

        def _stop_reason(self, e: ExecutionRecord | None, owner: str) -> str | None:
            raise NotImplementedError

        async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
            raise NotImplementedError

    def _init_pipes(self) -> None:
        self._events: dict[str, EventRecord] = {}
        self._failures: dict[str, list[TriggerFailure]] = {}
        self._waiters: dict[tuple[str, str], Waiter] = {}
        # open dict waiters by (pipe, shape, value); open predicate waiters by pipe;
        # the distinct shapes waited on per pipe (with how many open waiters use each)
        self._wait_index: dict[tuple[str, str, str], dict[tuple[str, str], None]] = {}
        self._wait_preds: dict[str, dict[tuple[str, str], None]] = {}
        self._wait_shapes: dict[str, dict[str, int]] = {}

    # --- events (pipes) -------------------------------------------------------------

    def _event_copy(self, ev: EventRecord) -> EventRecord:
        return replace(
            ev,
            executions=list(ev.executions),
            woke=list(ev.woke),
            failures=[replace(f) for f in self._failures.get(ev.id, [])],
        )

    async def send(
        self,
        event: EventRecord,
        executions: Sequence[ExecutionRecord],
        failures: Sequence[TriggerFailure],
    ) -> EventRecord:
        existing = self._events.get(event.id)
        if existing is not None:
            return self._event_copy(existing)
        stored = [self._insert(r).id for r in executions]
        self._events[event.id] = replace(event, executions=stored, failures=[], woke=[])
        self._serve_waiters(self._events[event.id])
        if failures:
            self._failures.setdefault(event.id, []).extend(replace(f) for f in failures)
        self._touch()
        return self._event_copy(self._events[event.id])

    async def events(
        self, pipe: str | None, since: float | None, limit: int, cursor: str | None
    ) -> EventPage:
        rows = [
            ev
            for ev in self._events.values()
            if (pipe is None or ev.pipe == pipe) and (since is None or ev.sent_at >= since)
        ]
        rows.sort(key=lambda ev: (ev.sent_at, ev.id), reverse=True)
        if cursor is not None:
            at, ident = decode_cursor(cursor)
            rows = [ev for ev in rows if (ev.sent_at, ev.id) < (at, ident)]
        limit = max(limit, 0)
        page = [self._event_copy(ev) for ev in rows[:limit]]
        more = len(rows) > limit
        nxt = encode_cursor(page[-1].sent_at, page[-1].id) if more and page else None
        return EventPage(page, nxt)

    # --- waiting (pipe.wait_for) -----------------------------------------------------------

    def _index_waiter(self, w: Waiter) -> None:
        k = (w.execution_id, w.key)
        if w.shape is None:
            self._wait_preds.setdefault(w.pipe, {})[k] = None
            return
        self._wait_index.setdefault((w.pipe, w.shape, w.value or ""), {})[k] = None
        shapes = self._wait_shapes.setdefault(w.pipe, {})
        shapes[w.shape] = shapes.get(w.shape, 0) + 1

    def _unindex_waiter(self, w: Waiter) -> None:
        k = (w.execution_id, w.key)
        if w.shape is None:
            self._wait_preds.get(w.pipe, {}).pop(k, None)
            return
        slot = (w.pipe, w.shape, w.value or "")
        bucket = self._wait_index.get(slot)
        if bucket is None or k not in bucket:
            return
        del bucket[k]
        if not bucket:
            del self._wait_index[slot]
        shapes = self._wait_shapes[w.pipe]
        shapes[w.shape] -= 1
        if not shapes[w.shape]:
            del shapes[w.shape]

    def _drop_waiters(self, execution_id: str) -> None:
        for k in [k for k in self._waiters if k[0] == execution_id]:
            self._unindex_waiter(self._waiters.pop(k))

    def _wake_one(self, execution_id: str, at: float) -> None:
        e = self._execs.get(execution_id)
        if e is not None and e.status == WAITING and e.owner is None:
            e.available_at = at

    def _has_waiters(self, pipe: str) -> bool:
        return bool(self._wait_shapes.get(pipe) or self._wait_preds.get(pipe))

    def _serve_waiters(self, event: EventRecord) -> None:
        """Deliver ``event`` (the stored record) to its waiters; note whom it woke."""
        shapes = self._wait_shapes.get(event.pipe)
        preds = self._wait_preds.get(event.pipe)
        if not shapes and not preds:
            return
        at = now()
        if shapes:
            data = json.loads(event.data)
            for shape in list(shapes):
                value = project(data, shape)
                if value is None:
                    continue
                bucket = self._wait_index.get((event.pipe, shape, value))
                for k in list(bucket or ()):
                    w = self._waiters[k]
                    self._unindex_waiter(w)
                    w.event_id = event.id
                    w.data = event.data
                    event.woke.append(w.execution_id)
                    self._wake_one(w.execution_id, at)
        for k in list(preds or ()):
            w = self._waiters[k]
            w.pokes += 1
            self._wake_one(w.execution_id, at)

    async def wait(
        self,
        execution_id: str,
        owner: str,
        waiter: Waiter,
        pokes: int | None,
        at: float | None = None,
    ) -> WaitState:
        at = now() if at is None else at
        e = self._execs.get(execution_id)
        why = self._stop_reason(e, owner)
        if e is None or (why is not None and why != "paused"):
            return WaitState(why, None, False)
        k = (execution_id, waiter.key)
        w = self._waiters.get(k)
        if w is None:
            w = self._waiters[k] = replace(waiter, event_id=None, pokes=0, data=None)
            self._index_waiter(w)
        done = w.deadline is not None and w.deadline <= at
        if w.event_id is None and not done and (pokes is None or pokes == w.pokes):
            status = PAUSED if e.pause_requested else WAITING
            self._flow.freed([e.slot])
            e.status = status
            e.owner = None
            e.pause_requested = False
            e.available_at = None if status == PAUSED else w.deadline
            self._touch()
            return WaitState(why, replace(w), True)
        self._touch()
        return WaitState(why, replace(w), False)

    async def end_wait(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        why = await self.checkpoint(execution_id, owner, cp)
        if why is None or why == "paused":
            w = self._waiters.pop((execution_id, cp.step.key), None)
            if w is not None:
                self._unindex_waiter(w)
        return why

    async def waiter(self, execution_id: str, key: str) -> Waiter | None:
        w = self._waiters.get((execution_id, key))
        return replace(w) if w is not None else None

    async def open_waiters(self, pipe: str | None, limit: int) -> list[Waiter]:
        found = [
            w
            for w in self._waiters.values()
            if w.event_id is None and (pipe is None or w.pipe == pipe)
        ]
        found.sort(key=lambda w: (w.since, w.execution_id))
        return [replace(w) for w in found[: max(limit, 0)]]

    async def awaited(self, prefix: str) -> set[str]:
        pipes = set(self._wait_preds) | set(self._wait_shapes)
        return {p for p in pipes if p.startswith(prefix) and self._has_waiters(p)}

    async def trigger_failures(self, source: str) -> list[TriggerFailure]:
        return [replace(f) for f in self._failures.get(source, [])]

    async def purge_events(self, before: float | None, keep: int | None) -> int:
        rows = sorted(self._events.values(), key=lambda ev: (ev.sent_at, ev.id), reverse=True)
        gone: set[str] = set()
        if keep is not None:
            gone.update(ev.id for ev in rows[max(keep, 0) :])
        if before is not None:
            gone.update(ev.id for ev in rows if ev.sent_at < before)
        for ident in gone:
            del self._events[ident]
            self._failures.pop(ident, None)
        if before is not None:
            for source in list(self._failures):
                kept = [f for f in self._failures[source] if f.at >= before]
                if kept:
                    self._failures[source] = kept
                else:
                    del self._failures[source]
        self._touch()
        return len(gone)
