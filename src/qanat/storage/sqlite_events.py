"""The event (pipe) part of the SQLite backend: sends, the event log, failed triggers,
and finishes that enqueue the executions a job's output triggers.

Kept apart from ``sqlite.py`` (whose hot paths are tuned separately);
``SqliteStorage`` mixes :class:`SqliteEvents` in. Every operation runs on the writer or
reader thread of ``SqliteStorage`` exactly like the ones in ``sqlite.py``; the schema is
``sql/sqlite_002_events.sql``. Semantics are those of ``MemoryStorage``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from qanat.storage.base import (
    COMPLETED,
    PAUSED,
    WAITING,
    Checkpoint,
    EventPage,
    EventRecord,
    ExecutionRecord,
    Finish,
    TriggerFailure,
    Waiter,
    WaitState,
    decode_cursor,
    encode_cursor,
)
from qanat.storage.matching import project

T = TypeVar("T")

IDS = "(SELECT value FROM json_each(?))"
EVENT_COLS = "id, pipe, data, sent_at, source"
INSERT_EVENT = (
    f"INSERT INTO events ({EVENT_COLS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
SELECT_EVENT = f"SELECT {EVENT_COLS} FROM events WHERE id = ?"
INSERT_LINK = "INSERT INTO event_executions (event_id, execution_id) VALUES (?, ?)"
INSERT_FAILURE = "INSERT INTO trigger_failures (source, job, error, at) VALUES (?, ?, ?, ?)"
LINKS = (
    f"SELECT event_id, execution_id FROM event_executions WHERE event_id IN {IDS} "
    "ORDER BY event_id, seq"
)
WAKES = f"SELECT event_id, execution_id FROM event_wakes WHERE event_id IN {IDS}"
INSERT_WAKE = "INSERT OR IGNORE INTO event_wakes (event_id, execution_id) VALUES (?, ?)"
FAILURES = (
    f"SELECT source, job, error, at FROM trigger_failures WHERE source IN {IDS} "
    "ORDER BY source, seq"
)


def _insert_exec(conn: sqlite3.Connection, rec: ExecutionRecord) -> ExecutionRecord:
    from qanat.storage.sqlite import _insert  # here: sqlite.py imports this module

    return _insert(conn, rec)


def _add_failures(conn: sqlite3.Connection, failures: Sequence[TriggerFailure]) -> None:
    if failures:
        conn.executemany(INSERT_FAILURE, [(f.source, f.job, f.error, f.at) for f in failures])


def _fill(conn: sqlite3.Connection, events: list[EventRecord]) -> list[EventRecord]:
    """Attach triggered execution ids and failed triggers to events."""
    if not events:
        return events
    ids = json.dumps([e.id for e in events])
    by_id = {e.id: e for e in events}
    for event_id, execution_id in conn.execute(LINKS, (ids,)).fetchall():
        by_id[event_id].executions.append(execution_id)
    for source, job, error, at in conn.execute(FAILURES, (ids,)).fetchall():
        by_id[source].failures.append(TriggerFailure(source, job, error, at))
    for event_id, execution_id in conn.execute(WAKES, (ids,)).fetchall():
        by_id[event_id].woke.append(execution_id)
    for e in events:
        e.woke.sort()
    return events


def _event(row: Any) -> EventRecord:
    return EventRecord(row[0], row[1], row[2], float(row[3]), row[4])


# --- writing operations (writer thread, inside its transaction) ------------------------


def _op_send(
    conn: sqlite3.Connection,
    event: EventRecord,
    executions: list[ExecutionRecord],
    failures: list[TriggerFailure],
) -> EventRecord:
    e = event
    cur = conn.execute(INSERT_EVENT, (e.id, e.pipe, e.data, e.sent_at, e.source))
    if cur.rowcount != 1:  # sent before (a replayed send): report what was stored
        row = conn.execute(SELECT_EVENT, (e.id,)).fetchone()
        return _fill(conn, [_event(row)])[0]
    stored = [_insert_exec(conn, r).id for r in executions]
    if stored:
        conn.executemany(INSERT_LINK, [(e.id, i) for i in stored])
    _add_failures(conn, failures)
    woke = _serve_waiters(conn, e)
    return EventRecord(e.id, e.pipe, e.data, e.sent_at, e.source, stored, list(failures), woke)


def bulk_send(conn: sqlite3.Connection, calls: list[tuple[Any, ...]]) -> list[EventRecord]:
    """A run of sends in one group commit, each as ``_op_send`` but without a savepoint
    apiece: the run has one, and any error sends the run back to one-by-one."""
    return [_op_send(conn, *c) for c in calls]


# --- waiting (pipe.wait_for) -------------------------------------------------------------

WAITER_COLS = "execution_id, key, pipe, shape, value, since, deadline, event_id, pokes, data"
SHAPES = "SELECT shape FROM wait_shapes WHERE pipe = ?"
DELIVER = (
    "UPDATE waiters INDEXED BY waiters_open SET event_id = ?1, data = ?5 "
    "WHERE pipe = ?2 AND shape = ?3 AND value = ?4 AND event_id IS NULL "
    "RETURNING execution_id"
)
SHAPE_USED = (
    "SELECT 1 FROM waiters INDEXED BY waiters_open "
    "WHERE pipe = ? AND shape = ? AND event_id IS NULL LIMIT 1"
)
UNUSED_SHAPE = "DELETE FROM wait_shapes WHERE pipe = ? AND shape = ?"
POKE = (
    "UPDATE waiters INDEXED BY waiters_open SET pokes = pokes + 1 "
    "WHERE pipe = ? AND shape IS NULL AND event_id IS NULL RETURNING execution_id"
)
WAKE_WAITING = (
    "UPDATE executions SET available_at = ?1 WHERE id = ?2 AND status = 'waiting' AND owner IS NULL"
)
INSERT_WAITER = (
    f"INSERT INTO waiters ({WAITER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL) "
    "ON CONFLICT (execution_id, key) DO NOTHING"
)
SELECT_WAITER = f"SELECT {WAITER_COLS} FROM waiters WHERE execution_id = ? AND key = ?"
SUSPEND_WAIT = (
    "UPDATE executions SET status = ?1, available_at = ?2, owner = NULL, pause_requested = 0 "
    "WHERE id = ?3 RETURNING slot"
)


def _serve_waiters(conn: sqlite3.Connection, e: EventRecord) -> list[str]:
    """Deliver the event to the dict waiters it matches and poke the predicate waiters
    of its pipe; wake their executions. Index look-ups only: one per distinct shape.
    Returns (and stores as the event's wakes) the executions whose dict waiters got it."""
    from qanat.storage.base import now

    at = now()
    woken: list[str] = []
    delivered: list[str] = []
    shapes = [r[0] for r in conn.execute(SHAPES, (e.pipe,)).fetchall()]
    if shapes:
        data = json.loads(e.data)
        for shape in shapes:
            value = project(data, shape)
            if value is not None:
                delivered.extend(
                    r[0] for r in conn.execute(DELIVER, (e.id, e.pipe, shape, value, e.data))
                )
            if conn.execute(SHAPE_USED, (e.pipe, shape)).fetchone() is None:
                conn.execute(
                    "DELETE FROM wait_shapes WHERE pipe = ? AND shape = ?", (e.pipe, shape)
                )
    woken.extend(delivered)
    woken.extend(r[0] for r in conn.execute(POKE, (e.pipe,)).fetchall())
    if woken:
        conn.executemany(WAKE_WAITING, [(at, i) for i in woken])
    delivered = sorted(set(delivered))
    if delivered:
        conn.executemany(INSERT_WAKE, [(e.id, i) for i in delivered])
    return delivered


def _waiter(row: Any) -> Waiter:
    return Waiter(*row)


def _op_wait(
    conn: sqlite3.Connection, eid: str, owner: str, w: Waiter, pokes: int | None, at: float
) -> WaitState:
    from qanat.storage.sqlite import OWNER_STATE, _stop_reason

    state = conn.execute(OWNER_STATE, (eid,)).fetchone()
    why = _stop_reason(state, owner)
    if why is not None and why != "paused":
        return WaitState(why, None, False)
    params = (eid, w.key, w.pipe, w.shape, w.value, w.since, w.deadline)
    if conn.execute(INSERT_WAITER, params).rowcount == 1 and w.shape is not None:
        conn.execute("INSERT OR IGNORE INTO wait_shapes VALUES (?, ?)", (w.pipe, w.shape))
    stored = _waiter(conn.execute(SELECT_WAITER, (eid, w.key)).fetchone())
    done = stored.deadline is not None and stored.deadline <= at
    if stored.event_id is None and not done and (pokes is None or pokes == stored.pokes):
        status = PAUSED if state[2] else WAITING
        available = None if status == PAUSED else stored.deadline
        from qanat.storage.sqlite_flow import freed

        freed([r[0] for r in conn.execute(SUSPEND_WAIT, (status, available, eid))], conn)
        return WaitState(why, stored, True)
    return WaitState(why, stored, False)


def _op_end_wait(conn: sqlite3.Connection, eid: str, owner: str, cp: Checkpoint) -> str | None:
    from qanat.storage.sqlite import _op_checkpoint

    why = _op_checkpoint(conn, eid, owner, cp)
    if why is None or why == "paused":
        conn.execute("DELETE FROM waiters WHERE execution_id = ? AND key = ?", (eid, cp.step.key))
    return why


def _op_waiter(conn: sqlite3.Connection, eid: str, key: str) -> Waiter | None:
    row = conn.execute(SELECT_WAITER, (eid, key)).fetchone()
    return _waiter(row) if row is not None else None


def _op_finish_triggers(conn: sqlite3.Connection, eid: str, owner: str, fin: Finish) -> bool:
    """A finish that also enqueues what the output triggers (when it completes)."""
    from qanat.storage.sqlite import _op_finish  # here: sqlite.py imports this module

    if not _op_finish(conn, eid, owner, fin):
        return False
    if fin.status == COMPLETED:
        for child in fin.children:
            _insert_exec(conn, child)
        _add_failures(conn, fin.failures)
        if fin.event is not None:
            deliver_job_events(conn, [fin.event])
    return True


WAITED_PIPES = (
    "SELECT DISTINCT pipe FROM waiters INDEXED BY waiters_open "
    "WHERE pipe IN (SELECT value FROM json_each(?)) AND event_id IS NULL"
)


def deliver_job_events(conn: sqlite3.Connection, events: list[EventRecord]) -> None:
    """Record job completions as events and serve their waiters, for the jobs that have
    open waiters (one indexed probe for the whole run; usually it finds none)."""
    if len(events) == 1:
        e = events[0]
        wanted = {e.pipe} if conn.execute(HAS_WAITERS, (e.pipe,)).fetchone() else set()
    else:
        pipes = json.dumps(sorted({e.pipe for e in events}))
        wanted = {r[0] for r in conn.execute(WAITED_PIPES, (pipes,)).fetchall()}
    for e in events:
        if (
            e.pipe in wanted
            and conn.execute(INSERT_EVENT, (e.id, e.pipe, e.data, e.sent_at, e.source)).rowcount
        ):
            _serve_waiters(conn, e)


HAS_WAITERS = (
    "SELECT 1 FROM waiters INDEXED BY waiters_open WHERE pipe = ? AND event_id IS NULL LIMIT 1"
)
AWAITED = (
    "SELECT DISTINCT pipe FROM waiters "
    "WHERE pipe >= ?1 AND pipe < ?1 || char(1114111) AND event_id IS NULL"
)


def _op_awaited(conn: sqlite3.Connection, prefix: str) -> set[str]:
    return {r[0] for r in conn.execute(AWAITED, (prefix,)).fetchall()}


def _op_purge_events(conn: sqlite3.Connection, before: float | None, keep: int | None) -> int:
    gone: set[str] = set()
    if keep is not None:
        rows = conn.execute(
            "SELECT id FROM events ORDER BY sent_at DESC, id DESC LIMIT -1 OFFSET ?",
            (max(keep, 0),),
        ).fetchall()
        gone.update(r[0] for r in rows)
    if before is not None:
        rows = conn.execute("SELECT id FROM events WHERE sent_at < ?", (before,)).fetchall()
        gone.update(r[0] for r in rows)
    doomed = json.dumps(sorted(gone))
    conn.execute(f"DELETE FROM event_executions WHERE event_id IN {IDS}", (doomed,))
    conn.execute(f"DELETE FROM trigger_failures WHERE source IN {IDS}", (doomed,))
    conn.execute(f"DELETE FROM event_wakes WHERE event_id IN {IDS}", (doomed,))
    conn.execute(f"DELETE FROM events WHERE id IN {IDS}", (doomed,))
    if before is not None:
        conn.execute("DELETE FROM trigger_failures WHERE at < ?", (before,))
    return len(gone)


# --- reading operations (reader thread) -------------------------------------------------


def _op_events(
    conn: sqlite3.Connection, pipe: str | None, since: float | None, limit: int, cursor: str | None
) -> EventPage:
    conds: list[str] = []
    params: list[Any] = []
    if pipe is not None:
        conds.append("pipe = ?")
        params.append(pipe)
    if since is not None:
        conds.append("sent_at >= ?")
        params.append(since)
    if cursor is not None:
        conds.append("(sent_at, id) < (?, ?)")
        params.extend(decode_cursor(cursor))
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    limit = max(limit, 0)
    params.append(limit + 1)
    rows = conn.execute(
        f"SELECT {EVENT_COLS} FROM events{where} ORDER BY sent_at DESC, id DESC LIMIT ?", params
    ).fetchall()
    page = _fill(conn, [_event(r) for r in rows[:limit]])
    more = len(rows) > limit
    nxt = encode_cursor(page[-1].sent_at, page[-1].id) if more and page else None
    return EventPage(page, nxt)


def _op_trigger_failures(conn: sqlite3.Connection, source: str) -> list[TriggerFailure]:
    rows = conn.execute(
        "SELECT source, job, error, at FROM trigger_failures WHERE source = ? ORDER BY seq",
        (source,),
    ).fetchall()
    return [TriggerFailure(*r) for r in rows]


# --- the mixin ------------------------------------------------------------------------------


class SqliteEvents:
    """The event methods of ``SqliteStorage`` (which provides ``_w`` and ``_r``)."""

    if TYPE_CHECKING:

        def _w(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]: ...
        def _r(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]: ...

    async def _finish_triggers(self, execution_id: str, owner: str, fin: Finish) -> bool:
        return await self._w(_op_finish_triggers, execution_id, owner, fin)

    async def send(
        self,
        event: EventRecord,
        executions: Sequence[ExecutionRecord],
        failures: Sequence[TriggerFailure],
    ) -> EventRecord:
        return await self._w(_op_send, event, list(executions), list(failures))

    async def events(
        self, pipe: str | None, since: float | None, limit: int, cursor: str | None
    ) -> EventPage:
        if cursor is not None:
            decode_cursor(cursor)  # a bad cursor is the caller's error, raised here
        return await self._r(_op_events, pipe, since, limit, cursor)

    async def wait(
        self, execution_id: str, owner: str, waiter: Waiter, pokes: int | None, at: float
    ) -> WaitState:
        return await self._w(_op_wait, execution_id, owner, waiter, pokes, at)

    async def end_wait(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        return await self._w(_op_end_wait, execution_id, owner, cp)

    async def waiter(self, execution_id: str, key: str) -> Waiter | None:
        return await self._r(_op_waiter, execution_id, key)

    async def awaited(self, prefix: str) -> set[str]:
        return await self._r(_op_awaited, prefix)

    async def trigger_failures(self, source: str) -> list[TriggerFailure]:
        return await self._r(_op_trigger_failures, source)

    async def purge_events(self, before: float | None, keep: int | None) -> int:
        return await self._w(_op_purge_events, before, keep)


__all__ = ["SqliteEvents"]
