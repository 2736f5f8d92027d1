"""Rows and records: the columns of each table in record order, and the statements and
checks every SQL operation module shares."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from qanat.storage.base import CANCELLED, RUNNING, WAITING, ExecutionRecord, LogRecord, StepRecord

EXEC_FIELDS = [f.name for f in fields(ExecutionRecord)]
EXEC_COLS = ", ".join('"group"' if n == "group" else n for n in EXEC_FIELDS)
REALS = ("created_at", "run_at", "available_at", "deadline", "started_at", "completed_at")
#: RETURNING skips the REAL affinity of whole-number floats: cast them back.
EXEC_RETURNING = ", ".join(
    f"CAST({n} AS REAL)" if n in REALS else ('"group"' if n == "group" else n) for n in EXEC_FIELDS
)
STEP_COLS = (
    "execution_id, key, kind, name, status, result, error, attempts, job_attempt, "
    "started_at, finished_at"
)
assert [f.name for f in fields(StepRecord)] == STEP_COLS.split(", ")
LOG_COLS = "execution_id, at, message, fields, step"
assert [f.name for f in fields(LogRecord)] == LOG_COLS.split(", ")
OWNED = "status IN ('running', 'waiting')"
LIVE = "status IN ('pending', 'running', 'waiting', 'paused')"
CLAIMABLE = "status IN ('pending', 'running', 'waiting')"
FINISHED = "status IN ('completed', 'failed', 'cancelled', 'skipped')"
#: A list of ids (or other strings) passed as one JSON array parameter.
IDS = "(SELECT value FROM json_each(?))"

SELECT_ONE = f"SELECT {EXEC_COLS} FROM executions WHERE id = ?"
SELECT_MANY = f"SELECT {EXEC_COLS} FROM executions WHERE id IN {IDS}"
#: SELECT_MANY without the payloads (get_many(payloads=False)).
SELECT_MANY_BARE = SELECT_MANY.replace("input,", "'' AS input,", 1).replace(
    "output, error,", "NULL AS output, NULL AS error,", 1
)
SELECT_BY_KEY = f"SELECT {EXEC_COLS} FROM executions WHERE job = ? AND key = ?"
#: The owner, status, pause request and recovery count: what a worker write checks first.
OWNER_STATE = "SELECT owner, status, pause_requested, recoveries FROM executions WHERE id = ?"
OWNER_STATES = (
    f"SELECT id, owner, status, pause_requested, recoveries FROM executions WHERE id IN {IDS}"
)
#: A checkpoint of a recovered execution: it got past what killed its workers.
RECOVERED = "UPDATE executions SET recoveries = 0, step_in_flight = NULL WHERE id = ?"
WAKE_PARENT = (
    "UPDATE executions SET available_at = ?1 WHERE id = ?2 AND status = 'waiting' "
    "AND owner IS NULL AND (available_at IS NULL OR available_at > ?1)"
)


def execution(row: Any) -> ExecutionRecord:
    """The record of a row selected as ``EXEC_COLS``."""
    rec = ExecutionRecord(*row)
    rec.pause_requested = bool(rec.pause_requested)
    return rec


def execution_params(r: ExecutionRecord) -> tuple[Any, ...]:
    """A record as the parameters of ``INSERT … (EXEC_COLS)`` (booleans as 0/1)."""
    return (
        r.id, r.job, r.input, r.status, r.priority, r.key, r.group, r.parent_id, r.attempt,
        r.max_attempts, r.created_at, r.run_at, r.available_at, r.deadline, r.started_at,
        r.completed_at, r.owner, r.output, r.error, r.reason, r.progress,
        int(r.pause_requested), r.claims, r.flow, r.slot, r.gate, r.recoveries,
        r.step_in_flight, r.trace,
    )  # fmt: skip


def stop_reason(row: Any, owner: str) -> str | None:
    """Why ``owner`` must stop, from (owner, status, pause_requested); as memory.py."""
    if row is None or row[0] != owner:
        return "lost"
    if row[1] == CANCELLED:
        return "cancelled"
    if row[1] not in (RUNNING, WAITING):
        return "lost"
    if row[2]:
        return "paused"
    return None
