"""The life of an execution in SQL: stored (enqueue), ended (finish, retry), left
(suspend, release), switched (mark), plus progress, logs and the workers table.

Every function is an operation of the writer thread: a function of the connection run
inside the writer's transaction (see ``writer.py``). Every write made for a worker is
conditional on that worker owning the execution (``owner = ?`` in the statement).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from qanat.errors import StorageError
from qanat.storage.base import (
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    WAITING,
    ExecutionRecord,
    Finish,
    LogRecord,
)
from qanat.storage.flow import FlowSpec, admit
from qanat.storage.memory import DEADLINE_ERROR
from qanat.storage.sqlcore.dialect import POSTGRES, Conn
from qanat.storage.sqlcore.events import add_failures, deliver_job_events
from qanat.storage.sqlcore.flow import SqlFlowState, gate_allows_running
from qanat.storage.sqlcore.parking import freed
from qanat.storage.sqlcore.records import (
    OWNED,
    ROW_COLS,
    ROW_PARAMS,
    SELECT_BY_KEY,
    SELECT_ONE,
    WAKE_PARENT,
    execution,
    execution_params,
)

_ROW_VALUES = ", ".join(f"?{n}" for n in range(1, ROW_PARAMS + 1))
#: An execution is born as two rows: executions (``ROW_COLS``) and inputs, both from
#: ``execution_params``. Where writable CTEs exist (PostgreSQL) one statement
#: writes both (``INSERT_BOTH``: one round trip); on SQLite two (``store_rows``).
INSERT_EXEC = (
    f"INSERT INTO executions ({ROW_COLS}) VALUES ({_ROW_VALUES}) "
    "ON CONFLICT (job, key) WHERE key IS NOT NULL DO NOTHING"
)
#: An execution stored by a write that may be retried (a checkpoint's children, after an
#: outage that hid whether the commit happened): a row of the same id is kept as it is.
INSERT_EXEC_ONCE = (
    f"INSERT INTO executions ({ROW_COLS}) VALUES ({_ROW_VALUES}) ON CONFLICT DO NOTHING"
)
INSERT_INPUT = "INSERT INTO inputs (id, input) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING"
_BOTH = (
    "WITH e AS ({insert} RETURNING id) INSERT INTO inputs (id, input) "
    f"SELECT id, CAST(?{ROW_PARAMS + 1} AS text) FROM e"
)
INSERT_BOTH = _BOTH.format(insert=INSERT_EXEC)
INSERT_BOTH_ONCE = _BOTH.format(insert=INSERT_EXEC_ONCE)
SET_OUTPUT = (
    "INSERT INTO outputs (id, output) VALUES (?2, ?1) "
    "ON CONFLICT (id) DO UPDATE SET output = excluded.output"
)
FINAL = (
    "UPDATE executions SET status = ?, error = ?, reason = ?, owner = NULL, "
    "available_at = NULL, completed_at = ?, pause_requested = 0 WHERE id = ?"
)
FINAL_ID = FINAL + " RETURNING parent_id, slot"
FINAL_OWNED = FINAL + f" AND owner = ? AND {OWNED} RETURNING parent_id, slot"
#: FINAL_OWNED and the output's row in one statement where writable CTEs exist
#: (PostgreSQL: one round trip); ``?7`` the output, NULL for none. A NULL ``?4`` (the
#: transaction has not read the clock yet) is the server's clock, read here and
#: returned, so the finish costs no round trip of its own for it.
FINAL_OWNED_OUT = (
    "WITH f AS ("
    + FINAL_OWNED.replace(
        "completed_at = ?,",
        "completed_at = COALESCE(CAST(?4 AS REAL), extract(epoch from clock_timestamp())),",
    ).replace("RETURNING parent_id, slot", "RETURNING parent_id, slot, completed_at")
    + "), o AS (INSERT INTO outputs (id, output) "
    "SELECT CAST(?5 AS text), CAST(?7 AS text) FROM f WHERE CAST(?7 AS text) IS NOT NULL "
    "ON CONFLICT (id) DO UPDATE SET output = excluded.output) "
    "SELECT parent_id, slot, completed_at FROM f"
)
RETRY_OWNED = (
    "UPDATE executions SET status = 'pending', owner = NULL, error = ?2, "
    "attempt = COALESCE(?3, attempt + 1), available_at = ?1, run_at = ?1, "
    "recoveries = 0, step_in_flight = NULL "
    f"WHERE id = ?4 AND owner = ?5 AND {OWNED} RETURNING slot"
)
BULK_FINAL = (
    "UPDATE executions SET status = j.status, error = j.error, "
    "reason = j.reason, owner = NULL, available_at = NULL, completed_at = ?1, "
    "pause_requested = 0 FROM (SELECT value ->> 0 AS id, value ->> 1 AS owner, "
    "value ->> 2 AS status, value ->> 4 AS error, "
    "value ->> 5 AS reason FROM json_each(?2)) AS j "
    "WHERE executions.id = j.id AND executions.owner = j.owner "
    "AND executions.status IN ('running', 'waiting') RETURNING id, parent_id, slot"
)
POSTGRES.overrides[BULK_FINAL] = BULK_FINAL.replace(
    "RETURNING id, parent_id, slot",
    "RETURNING executions.id, executions.parent_id, executions.slot",
)
#: BULK_FINAL and the outputs' rows in one statement where writable CTEs exist (the
#: outputs travel in the JSON text then: only when they are small, see bulk_finish).
BULK_FINAL_OUT = (
    "WITH j AS (SELECT value ->> 0 AS id, value ->> 1 AS owner, value ->> 2 AS status, "
    "value ->> 3 AS output, value ->> 4 AS error, value ->> 5 AS reason FROM json_each(?2)), "
    "f AS (UPDATE executions SET status = j.status, error = j.error, reason = j.reason, "
    "owner = NULL, available_at = NULL, completed_at = ?1, pause_requested = 0 FROM j "
    "WHERE executions.id = j.id AND executions.owner = j.owner "
    "AND executions.status IN ('running', 'waiting') "
    "RETURNING executions.id, executions.parent_id, executions.slot), "
    "o AS (INSERT INTO outputs (id, output) SELECT f.id, j.output FROM f JOIN j ON j.id = f.id "
    "WHERE j.output IS NOT NULL ON CONFLICT (id) DO UPDATE SET output = excluded.output) "
    "SELECT id, parent_id, slot FROM f"
)
#: Outputs up to this size ride in BULK_FINAL_OUT's JSON text (a bigger one would be
#: copied again, escaped, into it: it goes as a parameter of its own).
SMALL_OUTPUT = 1 << 16
SUSPEND = (
    "UPDATE executions SET "
    "status = CASE WHEN pause_requested <> 0 THEN 'paused' ELSE ?1 END, "
    "available_at = CASE WHEN pause_requested <> 0 OR ?1 = 'paused' THEN NULL "
    "ELSE CAST(?2 AS REAL) END, "
    f"owner = NULL, pause_requested = 0 WHERE id = ?3 AND owner = ?4 AND {OWNED} "
    "RETURNING slot"
)
MARK = (
    "UPDATE executions SET status = ? WHERE id = ? AND owner = ?"
    " AND status IN ('running', 'waiting') RETURNING slot"
)
RELEASE = (
    "UPDATE executions SET owner = NULL, status = 'pending', available_at = ? "
    f"WHERE id = ? AND owner = ? AND {OWNED} RETURNING slot"
)
#: Owned executions are running (or waiting) under a lease, so all are in the claim index.
EXPIRE = (
    "UPDATE executions INDEXED BY executions_ready SET available_at = ? "
    "WHERE available_at IS NOT NULL AND status IN ('pending', 'running', 'waiting') "
    f"AND owner = ? AND {OWNED}"
)
INSERT_LOG = "INSERT INTO logs (execution_id, at, message, fields, step) VALUES (?, ?, ?, ?, ?)"
INSERT_LOG_OWNED = (
    "INSERT INTO logs (execution_id, at, message, fields, step) "
    "SELECT ?1, CAST(?2 AS REAL), ?3, ?4, ?5 WHERE EXISTS "
    f"(SELECT 1 FROM executions WHERE id = ?1 AND owner = ?6 AND {OWNED})"
)
PROGRESS = "UPDATE executions SET progress = ? WHERE id = ?"
PROGRESS_OWNED = PROGRESS + f" AND owner = ? AND {OWNED}"
ENTER_STEP = f"UPDATE executions SET step_in_flight = ? WHERE id = ? AND owner = ? AND {OWNED}"
REGISTER = (
    "INSERT INTO workers (id, host, pid, registered_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
    "registered_at = excluded.registered_at"
)


def store_rows(conn: Conn, records: Sequence[ExecutionRecord], once: bool = False) -> int:
    """Insert executions (both their rows), without flow control: how many were stored.
    A taken ``(job, key)`` stores nothing; so does a taken id when ``once`` (else an id
    collision raises)."""
    params = [execution_params(r) for r in records]
    if conn.dialect.writable_cte:
        both = INSERT_BOTH_ONCE if once else INSERT_BOTH
        if len(params) == 1:
            n = int(conn.execute(both, params[0]).rowcount)
        else:
            conn.executemany(both, params)
            n = len(params)
    else:
        row = INSERT_EXEC_ONCE if once else INSERT_EXEC
        if len(params) == 1:
            if conn.execute(row, params[0][:ROW_PARAMS]).rowcount != 1:
                return 0
            conn.execute(INSERT_INPUT, (params[0][0], params[0][ROW_PARAMS]))
            n = 1
        else:
            conn.executemany(row, [p[:ROW_PARAMS] for p in params])
            # a row kept as it was (``once``) keeps its input too: DO NOTHING on the id
            conn.executemany(INSERT_INPUT, [(p[0], p[ROW_PARAMS]) for p in params])
            n = len(params)
    born = [(r.output, r.id) for r in records if r.output is not None]
    if born and n:
        conn.executemany(SET_OUTPUT, born)
    return n


def insert(conn: Conn, rec: ExecutionRecord, once: bool = False) -> ExecutionRecord:
    """Store one new execution (flow-control rules applied); the existing one instead
    if its ``(job, key)`` is taken, or the open batch it joined. With ``once`` (a write
    that may run again), an execution already stored under ``rec.id`` is returned as
    stored: the insert is idempotent."""
    if once:
        row = conn.execute(SELECT_ONE, (rec.id,)).fetchone()
        if row is not None:
            return execution(row)
    if rec.flow is not None:
        if rec.key is not None:
            row = conn.execute(SELECT_BY_KEY, (rec.job, rec.key)).fetchone()
            if row is not None:
                return execution(row)
        spec = FlowSpec.load(rec.flow)
        instead = admit(SqlFlowState(conn, rec.created_at, spec), rec, spec)
        if instead is not None:
            return instead
    if store_rows(conn, [rec], once) == 1:
        return rec.copy()
    row = conn.execute(SELECT_BY_KEY, (rec.job, rec.key)).fetchone()
    if row is None and once:
        row = conn.execute(SELECT_ONE, (rec.id,)).fetchone()
    if row is None:  # an id collision would have raised; be loud about anything else
        raise StorageError(f"execution {rec.id} could not be stored")
    return execution(row)


def plain(records: list[ExecutionRecord]) -> bool:
    """No key and no flow control: nothing to look up before the insert."""
    return all(r.key is None and r.flow is None for r in records)


def one_plain_record(records: list[ExecutionRecord]) -> bool:
    """One record without key or flow control: ``op_enqueue`` is then one statement
    where the dialect writes both rows with one (``INSERT_BOTH``)."""
    return len(records) == 1 and plain(records)


def claimed_by_enqueuer(records: Sequence[ExecutionRecord]) -> bool:
    """Every record is stored already running under an owner, without flow control: the
    enqueuing process's worker adopted them (``Worker.adopt``), so nobody in that process
    has anything to claim or to learn from their commit."""
    return all(r.status == RUNNING and r.owner is not None and r.flow is None for r in records)


def quiet_finish(eid: str, owner: str, fin: Finish) -> bool:
    """Whether a finish's commit may leave this process's own listeners asleep: a final
    outcome that enqueues nothing. The worker that made it runs the execution here and
    resolves this process's waits on it directly; a finish that wakes a parent, frees a
    slot or serves a waiter says so as it runs (``Conn.loud``). Not in a node, whose
    listeners answer other processes' long polls (``Storage.serves_others``)."""
    return fin.status != PENDING and not fin.children


def op_enqueue(conn: Conn, records: list[ExecutionRecord]) -> list[ExecutionRecord]:
    if len(records) > 1 and plain(records):  # one executemany (PostgreSQL: pipelined)
        store_rows(conn, records)
        return [r.copy() for r in records]
    return [insert(conn, r) for r in records]


def bulk_enqueue(
    conn: Conn, calls: list[tuple[list[ExecutionRecord]]]
) -> list[list[ExecutionRecord]] | None:
    """A run of enqueues in one group commit as one executemany, when none has a key or
    flow control (an id collision raises: the run then goes one by one)."""
    records = [r for (batch,) in calls for r in batch]
    if not plain(records):
        return None
    store_rows(conn, records)
    return [[r.copy() for r in batch] for (batch,) in calls]


def final(
    conn: Conn,
    eid: str,
    status: str,
    output: str | None,
    error: str | None,
    reason: str | None,
    at: float,
) -> None:
    """End an execution whoever owns it (a deadline passed before it was claimed)."""
    rows = conn.execute(FINAL_ID, (status, error, reason, at, eid)).fetchall()
    if rows and output is not None:
        conn.execute(SET_OUTPUT, (output, eid))
    if rows and rows[0][0] is not None:
        conn.execute(WAKE_PARENT, (at, rows[0][0]))
    if rows and rows[0][1] is not None:
        freed([rows[0][1]], conn)


def expire_deadline(conn: Conn, eid: str, at: float) -> None:
    final(conn, eid, FAILED, None, DEADLINE_ERROR, None, at)


def op_finish(conn: Conn, eid: str, owner: str, fin: Finish) -> bool:
    d = conn.dialect
    if fin.status != PENDING and d.writable_cte:
        return _finish_one(conn, eid, owner, fin)
    at = d.now(conn)
    if fin.status == PENDING:
        due = fin.available_at if fin.available_at is not None else at
        slots = conn.execute(RETRY_OWNED, (due, fin.error, fin.attempt or None, eid, owner))
        got = [r[0] for r in slots]
        freed(got, conn)
        if got and fin.logs:
            insert_logs(conn, fin.logs)
        return len(got) == 1
    rows = conn.execute(FINAL_OWNED, (fin.status, fin.error, fin.reason, at, eid, owner)).fetchall()
    if rows and fin.output is not None:
        conn.execute(SET_OUTPUT, (fin.output, eid))
    return _finished(conn, rows, at, fin)


def _finish_one(conn: Conn, eid: str, owner: str, fin: Finish) -> bool:
    """A final finish in one statement (writable CTEs): the update, the output and, if
    the transaction has not read it yet, the server's clock."""
    d = conn.dialect
    known = d.known_now(conn)
    rows = conn.execute(
        FINAL_OWNED_OUT, (fin.status, fin.error, fin.reason, known, eid, owner, fin.output)
    ).fetchall()
    if not rows:
        return False
    at = float(rows[0][2])
    if known is None:
        d.adopt_now(conn, at)
    return _finished(conn, rows, at, fin)


def _finished(conn: Conn, rows: list[Any], at: float, fin: Finish) -> bool:
    """What follows a final finish's update (``rows``: its parent and slot, if it held)."""
    if not rows:
        return False
    if rows[0][0] is not None:
        conn.execute(WAKE_PARENT, (at, rows[0][0]))
        conn.loud = True
    if rows[0][1] is not None:
        freed([rows[0][1]], conn)
        conn.loud = True
    if fin.event is not None and fin.status == COMPLETED:
        deliver_job_events(conn, [fin.event])
    if fin.logs:
        insert_logs(conn, fin.logs)
    return True


def op_finish_triggers(conn: Conn, eid: str, owner: str, fin: Finish) -> bool:
    """A finish that also enqueues what the output triggers (when it completes)."""
    if not op_finish(conn, eid, owner, fin):
        return False
    if fin.status == COMPLETED:
        for child in fin.children:
            insert(conn, child, once=True)
        add_failures(conn, fin.failures)
        if fin.event is not None:
            deliver_job_events(conn, [fin.event])
    return True


def bulk_finish(conn: Conn, calls: list[tuple[str, str, Finish]]) -> list[bool] | None:
    """Many final finishes in one statement (a worker's group-committed finishes)."""
    if len({c[0] for c in calls}) < len(calls) or any(
        c[2].status == PENDING or c[2].logs for c in calls
    ):
        return None  # a retry, log lines or the same execution twice: one by one
    at = conn.dialect.now(conn)
    if conn.dialect.writable_cte and all(len(c[2].output or "") <= SMALL_OUTPUT for c in calls):
        rows = json.dumps([[e, o, f.status, f.output, f.error, f.reason] for e, o, f in calls])
        got = conn.execute(BULK_FINAL_OUT, (at, rows)).fetchall()
        done = {r[0]: r[1] for r in got}
    else:
        rows = json.dumps([[e, o, f.status, None, f.error, f.reason] for e, o, f in calls])
        got = conn.execute(BULK_FINAL, (at, rows)).fetchall()
        done = {r[0]: r[1] for r in got}
        # outputs as parameters of their own (not inside the JSON text: no escaped copy)
        outputs = [(f.output, e) for e, _, f in calls if e in done and f.output is not None]
        if outputs:
            conn.executemany(SET_OUTPUT, outputs)
    slots = [r[2] for r in got if r[2] is not None]
    freed(slots, conn)
    parents = {p for p in done.values() if p is not None}
    for parent in parents:
        conn.execute(WAKE_PARENT, (at, parent))
    if slots or parents:
        conn.loud = True
    events = [f.event for e, _, f in calls if e in done and f.event and f.status == COMPLETED]
    if events:
        deliver_job_events(conn, events)
    return [c[0] in done for c in calls]


def op_suspend(conn: Conn, eid: str, owner: str, status: str, available_at: float | None) -> bool:
    got = [r[0] for r in conn.execute(SUSPEND, (status, available_at, eid, owner))]
    freed(got, conn)
    return len(got) == 1


def op_mark(conn: Conn, eid: str, owner: str, status: str) -> bool:
    if status == RUNNING and not gate_allows_running(conn, eid):
        return False
    got = [r[0] for r in conn.execute(MARK, (status, eid, owner))]
    if status == WAITING:
        freed(got, conn)
    return len(got) == 1


def op_enter_step(conn: Conn, eid: str, owner: str, key: str) -> bool:
    return bool(conn.execute(ENTER_STEP, (key, eid, owner)).rowcount == 1)


def op_release(conn: Conn, owner: str, ids: list[str]) -> None:
    at = conn.dialect.now(conn)  # due at once for every host
    for i in ids:
        freed([r[0] for r in conn.execute(RELEASE, (at, i, owner))], conn)


def op_progress(conn: Conn, eid: str, owner: str | None, progress: str) -> bool:
    if owner is None:
        return bool(conn.execute(PROGRESS, (progress, eid)).rowcount == 1)
    return bool(conn.execute(PROGRESS_OWNED, (progress, eid, owner)).rowcount == 1)


def insert_logs(conn: Conn, logs: Sequence[LogRecord]) -> None:
    conn.executemany(
        INSERT_LOG, [(g.execution_id, g.at, g.message, g.fields, g.step) for g in logs]
    )


def op_logs(conn: Conn, owner: str | None, logs: list[LogRecord]) -> int:
    """Append log lines; with an owner, only those of executions it owns (the count)."""
    if owner is None:
        insert_logs(conn, logs)
        return len(logs)
    rows = [(g.execution_id, g.at, g.message, g.fields, g.step, owner) for g in logs]
    stored: int = conn.executemany(INSERT_LOG_OWNED, rows).rowcount
    return stored


def op_register(conn: Conn, wid: str, host: str, pid: int, at: float) -> None:
    conn.execute(REGISTER, (wid, host, pid, at))


def op_unregister(conn: Conn, wid: str) -> None:
    conn.execute("DELETE FROM workers WHERE id = ?", (wid,))


def op_expire(conn: Conn, owner: str, at: float | None) -> int:
    at = conn.dialect.now(conn) if at is None else at
    n: int = conn.execute(EXPIRE, (at, owner)).rowcount
    conn.execute("DELETE FROM workers WHERE id = ?", (owner,))
    return n
