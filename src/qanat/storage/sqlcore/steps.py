"""Steps and checkpoints in SQL: a step result stored at its key with the children it
starts, fenced by the owner; and reading steps and logs back."""

from __future__ import annotations

import json

from qanat.storage.base import Checkpoint, LogRecord, StepRecord
from qanat.storage.sqlcore.dialect import Conn
from qanat.storage.sqlcore.executions import claimed_by_enqueuer, insert, plain, store_rows
from qanat.storage.sqlcore.records import (
    LOG_COLS,
    OWNED,
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
#: ``op_checkpoint`` without children as one statement where writable CTEs exist
#: (PostgreSQL): the owner row is locked and fenced (``owner = ?2 AND OWNED``), a
#: recovered execution cleared, and the step upserted only if the fence held; the row
#: returned says whether a pause was asked for, no row that the fence failed.
CHECKPOINT_ONE = (
    "WITH o AS (SELECT pause_requested, recoveries FROM executions "
    f"WHERE id = ?1 AND owner = ?2 AND {OWNED} FOR UPDATE), "
    "r AS (UPDATE executions SET recoveries = 0, step_in_flight = NULL "
    "WHERE id = ?1 AND EXISTS (SELECT 1 FROM o WHERE recoveries <> 0)) "
    f"INSERT INTO steps ({STEP_COLS}) SELECT ?1, ?3, ?4, ?5, ?6, ?7, ?8, "
    "CAST(?9 AS integer), CAST(?10 AS integer), CAST(?11 AS double precision), "
    "CAST(?12 AS double precision) FROM o"
    + UPSERT_STEP[UPSERT_STEP.index(" ON CONFLICT") :]
    + " RETURNING (SELECT pause_requested FROM o)"
)
SELECT_STEPS = f"SELECT {STEP_COLS} FROM steps WHERE execution_id = ? ORDER BY started_at, key"
SELECT_LOGS = f"SELECT {LOG_COLS} FROM logs WHERE execution_id = ? ORDER BY seq"


def one_statement_checkpoint(eid: str, owner: str, cp: Checkpoint) -> bool:
    """Whether ``op_checkpoint`` is one statement here (no children to insert)."""
    return not cp.children


def quiet_checkpoint(eid: str, owner: str, cp: Checkpoint) -> bool:
    """Whether a checkpoint's commit changes nothing this process's own listeners wait
    for: no children, or only children its worker adopted (they run here already)."""
    return not cp.children or claimed_by_enqueuer(cp.children)


def op_checkpoint(conn: Conn, eid: str, owner: str, cp: Checkpoint) -> str | None:
    if conn.dialect.writable_cte and not cp.children:
        return _checkpoint_one(conn, eid, owner, cp)
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
    for child in cp.children:  # idempotent: this checkpoint may be a retry (an outage)
        insert(conn, child, once=True)
    return why


def _checkpoint_one(conn: Conn, eid: str, owner: str, cp: Checkpoint) -> str | None:
    s = cp.step
    row = conn.execute(
        CHECKPOINT_ONE,
        (eid, owner, s.key, s.kind, s.name, s.status, s.result, s.error, s.attempts,
         s.job_attempt, s.started_at, s.finished_at),
    ).fetchone()  # fmt: skip
    if row is not None:
        return "paused" if row[0] else None
    # the fence failed: say why (nothing was written, so nothing depends on this read)
    why = stop_reason(conn.execute(OWNER_STATE, (eid,)).fetchone(), owner)
    return "lost" if why in (None, "paused") else why


def bulk_checkpoint(
    conn: Conn, calls: list[tuple[str, str, Checkpoint]]
) -> list[str | None] | None:
    """Many checkpoints in one group commit (of one execution or several, such as a
    fan-out's child starts): one owner read, one executemany for the steps and one for
    the children. Children with a key or flow control go one by one instead."""
    if not plain([c for _, _, cp in calls for c in cp.children]):
        return None
    states = conn.dialect.lock(OWNER_STATES)
    ids = list(dict.fromkeys(c[0] for c in calls))
    state = {r[0]: r[1:] for r in conn.execute(states, (json.dumps(ids),)).fetchall()}
    whys = [stop_reason(state.get(e), o) for e, o, _ in calls]
    kept = [call for call, why in zip(calls, whys, strict=True) if why in (None, "paused")]
    recovered = [(e,) for e in dict.fromkeys(e for e, _, _ in kept) if state[e][3]]
    if recovered:
        conn.executemany(RECOVERED, recovered)
    rows = [
        (e, s.key, s.kind, s.name, s.status, s.result, s.error, s.attempts, s.job_attempt,
         s.started_at, s.finished_at)
        for e, _, cp in kept
        for s in (cp.step,)
    ]  # fmt: skip
    if rows:
        conn.executemany(UPSERT_STEP, rows)
    children = [c for _, _, cp in kept for c in cp.children]
    if children:
        store_rows(conn, children, once=True)
    return whys


def op_steps(conn: Conn, eid: str) -> list[StepRecord]:
    return [StepRecord(*r) for r in conn.execute(SELECT_STEPS, (eid,)).fetchall()]


def op_read_logs(conn: Conn, eid: str) -> list[LogRecord]:
    return [LogRecord(*r) for r in conn.execute(SELECT_LOGS, (eid,)).fetchall()]
