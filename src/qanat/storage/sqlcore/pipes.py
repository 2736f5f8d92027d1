"""Sends and waits on pipes in SQL: a send stores its event and the executions it
triggers and serves waiters; a wait records its waiter and suspends the execution; an
ended wait checkpoints its result. Operations of the writer thread."""

from __future__ import annotations

from typing import Any

from qanat.storage.base import (
    PAUSED,
    WAITING,
    Checkpoint,
    EventRecord,
    ExecutionRecord,
    TriggerFailure,
    Waiter,
    WaitState,
)
from qanat.storage.sqlcore.dialect import Conn
from qanat.storage.sqlcore.events import (
    INSERT_EVENT,
    INSERT_LINK,
    INSERT_SHAPE,
    INSERT_WAITER,
    SELECT_EVENT,
    SELECT_WAITER,
    SUSPEND_WAIT,
    add_failures,
    event_record,
    fill,
    serve_waiters,
    waiter_record,
)
from qanat.storage.sqlcore.executions import insert
from qanat.storage.sqlcore.parking import freed
from qanat.storage.sqlcore.records import OWNER_STATE, stop_reason
from qanat.storage.sqlcore.steps import op_checkpoint


def op_send(
    conn: Conn,
    event: EventRecord,
    executions: list[ExecutionRecord],
    failures: list[TriggerFailure],
) -> EventRecord:
    e = event
    cur = conn.execute(INSERT_EVENT, (e.id, e.pipe, e.data, e.sent_at, e.source))
    if cur.rowcount != 1:  # sent before (a replayed send): report what was stored
        row = conn.execute(SELECT_EVENT, (e.id,)).fetchone()
        return fill(conn, [event_record(row)])[0]
    stored = [insert(conn, r).id for r in executions]
    if stored:
        conn.executemany(INSERT_LINK, [(e.id, i) for i in stored])
    add_failures(conn, failures)
    woke = serve_waiters(conn, e)
    return EventRecord(e.id, e.pipe, e.data, e.sent_at, e.source, stored, list(failures), woke)


def bulk_send(conn: Conn, calls: list[tuple[Any, ...]]) -> list[EventRecord]:
    """A run of sends in one group commit, each as ``op_send`` but without a savepoint
    apiece: the run has one, and any error sends the run back to one-by-one."""
    return [op_send(conn, *c) for c in calls]


def op_wait(
    conn: Conn, eid: str, owner: str, w: Waiter, pokes: int | None, at: float | None
) -> WaitState:
    state = conn.execute(conn.dialect.lock(OWNER_STATE), (eid,)).fetchone()
    why = stop_reason(state, owner)
    if why is not None and why != "paused":
        return WaitState(why, None, False)
    params = (eid, w.key, w.pipe, w.shape, w.value, w.since, w.deadline)
    if conn.execute(INSERT_WAITER, params).rowcount == 1 and w.shape is not None:
        conn.execute(INSERT_SHAPE, (w.pipe, w.shape))
    stored = waiter_record(conn.execute(SELECT_WAITER, (eid, w.key)).fetchone())
    done = stored.deadline is not None and stored.deadline <= (
        conn.dialect.now(conn) if at is None else at
    )
    if stored.event_id is None and not done and (pokes is None or pokes == stored.pokes):
        status = PAUSED if state[2] else WAITING
        available = None if status == PAUSED else stored.deadline
        freed([r[0] for r in conn.execute(SUSPEND_WAIT, (status, available, eid))], conn)
        return WaitState(why, stored, True)
    return WaitState(why, stored, False)


def op_end_wait(conn: Conn, eid: str, owner: str, cp: Checkpoint) -> str | None:
    why = op_checkpoint(conn, eid, owner, cp)
    if why is None or why == "paused":
        conn.execute("DELETE FROM waiters WHERE execution_id = ? AND key = ?", (eid, cp.step.key))
    return why
