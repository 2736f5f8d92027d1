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
    EventPage,
    EventRecord,
    ExecutionRecord,
    Finish,
    TriggerFailure,
    decode_cursor,
    encode_cursor,
)

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
    return EventRecord(e.id, e.pipe, e.data, e.sent_at, e.source, stored, list(failures))


def _op_finish_triggers(conn: sqlite3.Connection, eid: str, owner: str, fin: Finish) -> bool:
    """A finish that also enqueues what the output triggers (when it completes)."""
    from qanat.storage.sqlite import _op_finish  # here: sqlite.py imports this module

    if not _op_finish(conn, eid, owner, fin):
        return False
    if fin.status == COMPLETED:
        for child in fin.children:
            _insert_exec(conn, child)
        _add_failures(conn, fin.failures)
    return True


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

    async def trigger_failures(self, source: str) -> list[TriggerFailure]:
        return await self._r(_op_trigger_failures, source)

    async def purge_events(self, before: float | None, keep: int | None) -> int:
        return await self._w(_op_purge_events, before, keep)


__all__ = ["SqliteEvents"]
