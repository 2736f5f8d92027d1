"""Steps and checkpoints in SQL: a step result stored at its key with the children it
starts, fenced by the owner; and reading steps and logs back."""

from __future__ import annotations

import json

from qanat.storage.base import Checkpoint, LogRecord, StepRecord
from qanat.storage.sqlcore.dialect import Conn
from qanat.storage.sqlcore.executions import insert
from qanat.storage.sqlcore.records import (
    LOG_COLS,
    OWNER_STATE,
    OWNER_STATES,
    RECOVERED,
    STEP_COLS,
    stop_reason,
)

UPSERT_STEP = (
    f"INSERT INTO steps ({STEP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id, key) DO UPDATE SET kind = excluded.kind, "
    "name = excluded.name, status = excluded.status, result = excluded.result, "
    "error = excluded.error, attempts = excluded.attempts, "
    "job_attempt = excluded.job_attempt, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at"
)
SELECT_STEPS = f"SELECT {STEP_COLS} FROM steps WHERE execution_id = ? ORDER BY started_at, seq"
SELECT_LOGS = f"SELECT {LOG_COLS} FROM logs WHERE execution_id = ? ORDER BY seq"


def op_checkpoint(conn: Conn, eid: str, owner: str, cp: Checkpoint) -> str | None:
    # the owner row stays locked until commit where writers run concurrently
    state = conn.execute(conn.dialect.lock(OWNER_STATE), (eid,)).fetchone()
    why = stop_reason(state, owner)
    if why is not None and why != "paused":
        return why
    if state[3]:
        conn.execute(RECOVERED, (eid,))
    s = cp.step
    conn.execute(
        UPSERT_STEP,
        (eid, s.key, s.kind, s.name, s.status, s.result, s.error, s.attempts, s.job_attempt,
         s.started_at, s.finished_at),
    )  # fmt: skip
    for child in cp.children:
        insert(conn, child)
    return why


def bulk_checkpoint(
    conn: Conn, calls: list[tuple[str, str, Checkpoint]]
) -> list[str | None] | None:
    """Many checkpoints of different executions: one owner read, one executemany."""
    if len({c[0] for c in calls}) < len(calls) or any(c[2].children for c in calls):
        return None  # the same execution twice, or children to insert: one by one
    states = conn.dialect.lock(OWNER_STATES)
    state = {
        r[0]: r[1:] for r in conn.execute(states, (json.dumps([c[0] for c in calls]),)).fetchall()
    }
    whys = [stop_reason(state.get(e), o) for e, o, _ in calls]
    recovered = [
        (e,) for (e, _, _), why in zip(calls, whys, strict=True)
        if why in (None, "paused") and state[e][3]
    ]  # fmt: skip
    if recovered:
        conn.executemany(RECOVERED, recovered)
    rows = [
        (e, s.key, s.kind, s.name, s.status, s.result, s.error, s.attempts, s.job_attempt,
         s.started_at, s.finished_at)
        for (e, _, cp), why in zip(calls, whys, strict=True)
        if why is None or why == "paused"
        for s in (cp.step,)
    ]  # fmt: skip
    if rows:
        conn.executemany(UPSERT_STEP, rows)
    return whys


def op_steps(conn: Conn, eid: str) -> list[StepRecord]:
    return [StepRecord(*r) for r in conn.execute(SELECT_STEPS, (eid,)).fetchall()]


def op_read_logs(conn: Conn, eid: str) -> list[LogRecord]:
    return [LogRecord(*r) for r in conn.execute(SELECT_LOGS, (eid,)).fetchall()]
