"""Control operations (cancel, pause, resume, restart, wake): run on the writer thread
inside its transaction, like every writing operation of the core."""

from __future__ import annotations

import json

from qanat.storage.base import ExecutionRecord
from qanat.storage.sqlcore.dialect import Conn
from qanat.storage.sqlcore.parking import freed
from qanat.storage.sqlcore.records import EXEC_COLS, IDS, LIVE, SELECT_ONE, execution

CANCEL_FIND = (
    "WITH RECURSIVE doomed(id) AS ("
    f" SELECT id FROM executions WHERE id IN {IDS} AND {LIVE}"
    " UNION SELECT e.id FROM executions e JOIN doomed d ON e.parent_id = d.id"
    f" WHERE e.{LIVE}"
    # the outer status check is the re-check of a row a concurrent writer changed
    # (a live execution has no output: only its input is joined, so the lock can hold)
    f") SELECT {EXEC_COLS.replace('output,', 'NULL AS output,', 1)} "
    f"FROM executions JOIN inputs USING (id) WHERE id IN (SELECT id FROM doomed) AND {LIVE}"
)
CANCEL_SET = (
    "UPDATE executions SET status = 'cancelled', error = NULL, reason = ?, "
    "available_at = NULL, completed_at = ?, pause_requested = 0, gate = NULL "
    f"WHERE id IN {IDS}"
)
CANCEL_WAKE = (
    "UPDATE executions SET available_at = ?1 WHERE status = 'waiting' AND owner IS NULL "
    "AND (available_at IS NULL OR available_at > ?1) "
    f"AND id IN (SELECT parent_id FROM executions WHERE id IN {IDS.replace('?', '?2')})"
)
PAUSE = (
    "UPDATE executions SET "
    "status = CASE WHEN status = 'pending' OR (status = 'waiting' AND owner IS NULL) "
    "THEN 'paused' ELSE status END, "
    "available_at = CASE WHEN status = 'pending' OR (status = 'waiting' AND owner IS NULL) "
    "THEN NULL ELSE available_at END, "
    "pause_requested = CASE WHEN status = 'running' OR (status = 'waiting' AND owner IS NOT NULL) "
    "THEN 1 ELSE pause_requested END, "
    "gate = CASE WHEN status = 'pending' OR (status = 'waiting' AND owner IS NULL) "
    "THEN NULL ELSE gate END "
    "WHERE id = ? RETURNING status"
)
RESUME = (
    "UPDATE executions SET status = CASE WHEN status = 'paused' THEN 'pending' ELSE status END, "
    "available_at = CASE WHEN status = 'paused' THEN CAST(? AS REAL) ELSE available_at END, "
    "pause_requested = 0 WHERE id = ? RETURNING status"
)
RESTART = (
    "UPDATE executions SET status = 'pending', attempt = 1, owner = NULL, "
    "error = NULL, reason = NULL, progress = NULL, started_at = NULL, completed_at = NULL, "
    "available_at = ?1, run_at = ?1, claims = 0, recoveries = 0, step_in_flight = NULL "
    "WHERE id = ?2 AND status IN ('failed', 'cancelled') RETURNING id"
)
#: A live or restarted execution has no output (only a completing finish writes one).
CLEAR_OUTPUT = f"DELETE FROM outputs WHERE id IN {IDS}"
WAKE = (
    "UPDATE executions SET available_at = ? WHERE id = ? AND status = 'waiting' AND owner IS NULL"
)


def cancel_tree(conn: Conn, ids: list[str], reason: str | None) -> list[ExecutionRecord]:
    """Cancel live executions and their live descendants; the records as they were."""
    at = conn.dialect.now(conn)
    find = conn.dialect.lock(CANCEL_FIND)
    out = [execution(r) for r in conn.execute(find, (json.dumps(ids),)).fetchall()]
    if out:
        doomed = json.dumps([e.id for e in out])
        conn.execute(CANCEL_SET, (reason, at, doomed))
        conn.execute(CLEAR_OUTPUT, (doomed,))
        conn.execute(CANCEL_WAKE, (at, doomed))
        freed([e.slot for e in out if e.gate is None], conn)
    return out


def op_cancel(conn: Conn, ids: list[str], reason: str | None) -> list[ExecutionRecord]:
    return cancel_tree(conn, ids, reason)


def op_pause(conn: Conn, eid: str) -> str | None:
    rows = conn.execute(PAUSE, (eid,)).fetchall()
    return rows[0][0] if rows else None


def op_resume(conn: Conn, eid: str) -> str | None:
    rows = conn.execute(RESUME, (conn.dialect.now(conn), eid)).fetchall()
    return rows[0][0] if rows else None


def op_restart(conn: Conn, eid: str, at: float) -> ExecutionRecord | None:
    rows = conn.execute(RESTART, (at, eid)).fetchall()
    if not rows:
        return None
    conn.execute(CLEAR_OUTPUT, (json.dumps([eid]),))
    conn.execute("DELETE FROM steps WHERE execution_id = ?", (eid,))
    conn.execute("DELETE FROM logs WHERE execution_id = ?", (eid,))
    conn.execute("DELETE FROM waiters WHERE execution_id = ?", (eid,))
    return execution(conn.execute(SELECT_ONE, (eid,)).fetchone())


PAUSE_JOB = "INSERT INTO paused_jobs (job, paused_at) VALUES (?, ?) ON CONFLICT (job) DO NOTHING"
RESUME_JOB = "DELETE FROM paused_jobs WHERE job = ?"


def op_pause_job(conn: Conn, job: str, paused: bool, at: float) -> bool:
    if paused:
        return bool(conn.execute(PAUSE_JOB, (job, at)).rowcount == 1)
    return bool(conn.execute(RESUME_JOB, (job,)).rowcount == 1)


def op_wake(conn: Conn, ids: list[str], at: float) -> None:
    conn.executemany(WAKE, [(at, i) for i in ids])
