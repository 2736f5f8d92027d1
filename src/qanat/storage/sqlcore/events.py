"""Events in SQL: the event log, deliveries to waiters, failed triggers, and reading
them back. Writing operations run on the writer thread inside its transaction, reading
ones on the reader; sends and waits themselves (which also store executions and
checkpoints) are in ``pipes.py``. Schema: ``sql/sqlite_002_events.sql`` to
``sqlite_004_event_wakes.sql``. Semantics are those of ``MemoryStorage``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from qanat.storage.base import (
    EventPage,
    EventRecord,
    TriggerFailure,
    Waiter,
    decode_cursor,
    encode_cursor,
)
from qanat.storage.matching import project
from qanat.storage.sqlcore.dialect import POSTGRES, Conn
from qanat.storage.sqlcore.records import IDS

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
INSERT_WAKE = (
    "INSERT INTO event_wakes (event_id, execution_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
FAILURES = (
    f"SELECT source, job, error, at FROM trigger_failures WHERE source IN {IDS} "
    "ORDER BY source, seq"
)


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
INSERT_SHAPE = "INSERT INTO wait_shapes (pipe, shape) VALUES (?, ?) ON CONFLICT DO NOTHING"
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


def add_failures(conn: Conn, failures: Sequence[TriggerFailure]) -> None:
    if failures:
        conn.executemany(INSERT_FAILURE, [(f.source, f.job, f.error, f.at) for f in failures])


def fill(conn: Conn, events: list[EventRecord]) -> list[EventRecord]:
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


def event_record(row: Any) -> EventRecord:
    return EventRecord(row[0], row[1], row[2], float(row[3]), row[4])


def serve_waiters(conn: Conn, e: EventRecord) -> list[str]:
    """Deliver the event to the dict waiters it matches and poke the predicate waiters
    of its pipe; wake their executions. Index look-ups only: one per distinct shape.
    Returns (and stores as the event's wakes) the executions whose dict waiters got it."""
    at = conn.dialect.now(conn)  # the woken executions are due now for every host
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
                conn.execute(UNUSED_SHAPE, (e.pipe, shape))
    woken.extend(delivered)
    woken.extend(r[0] for r in conn.execute(POKE, (e.pipe,)).fetchall())
    if woken:
        conn.executemany(WAKE_WAITING, [(at, i) for i in woken])
    delivered = sorted(set(delivered))
    if delivered:
        conn.executemany(INSERT_WAKE, [(e.id, i) for i in delivered])
    return delivered


def waiter_record(row: Any) -> Waiter:
    return Waiter(*row)


def op_waiter(conn: Conn, eid: str, key: str) -> Waiter | None:
    row = conn.execute(SELECT_WAITER, (eid, key)).fetchone()
    return waiter_record(row) if row is not None else None


OPEN_WAITERS = (
    f"SELECT {WAITER_COLS} FROM waiters WHERE event_id IS NULL "
    "AND (CAST(?1 AS TEXT) IS NULL OR pipe = ?1) ORDER BY since, execution_id LIMIT ?2"
)


def op_open_waiters(conn: Conn, pipe: str | None, limit: int) -> list[Waiter]:
    rows = conn.execute(OPEN_WAITERS, (pipe, max(limit, 0))).fetchall()
    return [waiter_record(r) for r in rows]


WAITED_PIPES = (
    "SELECT DISTINCT pipe FROM waiters INDEXED BY waiters_open "
    "WHERE pipe IN (SELECT value FROM json_each(?)) AND event_id IS NULL"
)


def deliver_job_events(conn: Conn, events: list[EventRecord]) -> None:
    """Record job completions as events and serve their waiters, for the jobs that have
    open waiters (one indexed probe for the whole run; usually it finds none)."""
    if len(events) == 1:
        e = events[0]
        wanted = {e.pipe} if conn.execute(HAS_WAITERS, (e.pipe,)).fetchone() else set()
    else:
        pipes = json.dumps(sorted({e.pipe for e in events}))
        wanted = {r[0] for r in conn.execute(WAITED_PIPES, (pipes,)).fetchall()}
    if wanted:
        conn.loud = True  # a waiter may be served: wake its execution's worker
    for e in events:
        if (
            e.pipe in wanted
            and conn.execute(INSERT_EVENT, (e.id, e.pipe, e.data, e.sent_at, e.source)).rowcount
        ):
            serve_waiters(conn, e)


HAS_WAITERS = (
    "SELECT 1 FROM waiters INDEXED BY waiters_open WHERE pipe = ? AND event_id IS NULL LIMIT 1"
)
AWAITED = (
    "SELECT DISTINCT pipe FROM waiters "
    "WHERE pipe >= ?1 AND pipe < ?1 || char(1114111) AND event_id IS NULL"
)


def op_awaited(conn: Conn, prefix: str) -> set[str]:
    return {r[0] for r in conn.execute(AWAITED, (prefix,)).fetchall()}


def op_purge_events(conn: Conn, before: float | None, keep: int | None) -> int:
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


def op_events(
    conn: Conn, pipe: str | None, since: float | None, limit: int, cursor: str | None
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
    page = fill(conn, [event_record(r) for r in rows[:limit]])
    more = len(rows) > limit
    nxt = encode_cursor(page[-1].sent_at, page[-1].id) if more and page else None
    return EventPage(page, nxt)


def op_trigger_failures(conn: Conn, source: str) -> list[TriggerFailure]:
    rows = conn.execute(
        "SELECT source, job, error, at FROM trigger_failures WHERE source = ? ORDER BY seq",
        (source,),
    ).fetchall()
    return [TriggerFailure(*r) for r in rows]


POSTGRES.overrides[AWAITED] = (
    "SELECT DISTINCT pipe FROM waiters WHERE starts_with(pipe, ?1) AND event_id IS NULL"
)
