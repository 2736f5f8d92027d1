"""SQLite storage (``sqlite:///path.db``): embedded, durable, shared by processes on one host.

Three connections, each used by one thread only:

* the **writer** runs on its own thread. Callers queue an operation (a function of the
  connection) and await a future; the thread takes everything queued and runs it in
  one ``BEGIN IMMEDIATE … COMMIT`` (group commit), each operation in its own
  SAVEPOINT so one that raises is rolled back alone. Futures are resolved only after
  the COMMIT returned: a write is acknowledged once it is durable, never before.
* the **reader** runs queries on a second thread (WAL readers don't block the writer).
* the **watcher** connection runs ``PRAGMA data_version`` on the event-loop thread for
  ``changed()``: a few microseconds. After each commit that changed something the
  writer rings the doorbell (``storage/doorbell.py``), which wakes ``listen()``
  callbacks here and in every other process on the file at once; polling
  ``changed()`` is then only the fallback.

The semantics of every method are those of :class:`qanat.storage.memory.MemoryStorage`;
the contract tests in ``tests/contract`` run the same suite against both.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import importlib.resources
import json
import os
import queue
import re
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from qanat.errors import StorageError
from qanat.storage.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STATUSES,
    WAITING,
    Checkpoint,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    Page,
    Stats,
    StepRecord,
    Storage,
    decode_cursor,
    encode_cursor,
    now,
)
from qanat.storage.doorbell import Doorbell
from qanat.storage.flow import FlowSpec, admit
from qanat.storage.memory import DEADLINE_ERROR
from qanat.storage.sqlite_events import SqliteEvents, _op_send, bulk_send, deliver_job_events
from qanat.storage.sqlite_flow import (
    ClaimGates,
    SqliteFlowState,
    freed,
    gate_allows_running,
    op_acquire_step,
    op_refill,
    op_release_step,
    open_due_gates,
    renew_steps,
)

T = TypeVar("T")

SQLITE_HEADER = b"SQLite format 3\x00"
APPLICATION = "qanat"
SYNCHRONOUS = ("full", "normal", "extra")
#: At most this many operations share one transaction (bounds a batch's latency).
MAX_BATCH = 1024
#: At most this many executions are parked by one claim (bounds its transaction).
MAX_PARK = 1000

# --- schema and migrations -----------------------------------------------------------


@functools.cache
def migrations() -> tuple[tuple[int, str], ...]:
    """The numbered schema scripts ``sql/sqlite_NNN_name.sql``, in order.

    Adding a migration is adding the next numbered file; it runs once, inside the
    transaction that records its number as ``schema_version`` in ``qanat_meta``.
    """
    found: list[tuple[int, str]] = []
    for entry in (importlib.resources.files("qanat.storage") / "sql").iterdir():
        m = re.fullmatch(r"sqlite_(\d+)_\w+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"qanat SQLite migrations are not numbered 1..n: {found!r}")
    return tuple(found)


def schema_version() -> int:
    """The newest schema this code knows."""
    return len(migrations())


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""


def _not_qanat(path: str, why: str) -> StorageError:
    return StorageError(
        f"{path} is not a qanat database ({why}); qanat refuses to touch it. "
        "Point the queue at a new file or at an existing qanat database."
    )


def _unreadable(path: str, exc: sqlite3.DatabaseError) -> StorageError:
    """An SQLite file (its header is right) that SQLite cannot read: damaged, typically a
    truncated copy; say so, and how to get back what can be (docs/storage.md)."""
    if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return _not_qanat(path, f"SQLite cannot read it: {exc}")
    return StorageError(
        f"{path} is a damaged SQLite file (SQLite: {exc}), for example a truncated or "
        "partial copy; qanat refuses to touch it. Restore it from a backup, or copy what "
        f'SQLite can still read into a new file: sqlite3 {path} ".recover" | sqlite3 '
        'recovered.db, and point the queue at recovered.db (docs/storage.md, "Backups '
        'and damaged files", also shows the .dump way for sqlite3 versions whose '
        ".recover fails)."
    )


def _newer(path: str, version: int) -> StorageError:
    return StorageError(
        f"{path} was written by a newer qanat (schema {version}); this version understands "
        f"up to {schema_version()}. Upgrade qanat to use this database."
    )


def _check_meta(path: str, conn: sqlite3.Connection) -> int:
    """The schema version of an existing database, or 0 if it is empty; refuse others."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "qanat_meta" not in tables:
        raise _not_qanat(path, "it is an SQLite database without the qanat_meta marker")
    meta = dict(conn.execute("SELECT key, value FROM qanat_meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise _not_qanat(path, "its qanat_meta table has no qanat application marker")
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise _not_qanat(path, "its schema_version is not a number") from None
    if version > schema_version():
        raise _newer(path, version)
    return version


def _inspect(path: str, timeout: float) -> None:
    """Refuse a file that is not ours, reading it only: nothing is written before this."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StorageError(
                f"cannot create qanat database {path}: folder {folder} does not exist"
            ) from None
        return
    except OSError as exc:
        raise StorageError(f"cannot open qanat database {path}: {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise _not_qanat(path, "it is a directory")
    if st.st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"cannot read qanat database {path}: {exc}") from exc
    if header != SQLITE_HEADER:
        raise _not_qanat(path, "it is not an SQLite file")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open qanat database {path}: {exc}") from exc
    try:
        _check_meta(path, conn)
    except sqlite3.DatabaseError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        conn.close()


def _wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch to WAL. Processes opening a new file at once can find it locked here, where
    SQLite does not wait out ``busy_timeout``: retry until that time has passed."""
    end = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > end:
                raise
            time.sleep(0.005)


def _migrate(path: str, conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_meta(path, conn)  # again, under the write lock
        for number, script in migrations():
            if number <= version:
                continue
            for sql in _statements(script):
                conn.execute(sql)
            conn.execute(
                "INSERT OR REPLACE INTO qanat_meta (key, value) VALUES ('schema_version', ?)",
                (str(number),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# --- rows and records ----------------------------------------------------------------

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
IDS = "(SELECT value FROM json_each(?))"


def _exec(row: Any) -> ExecutionRecord:
    rec = ExecutionRecord(*row)
    rec.pause_requested = bool(rec.pause_requested)
    return rec


def _exec_params(r: ExecutionRecord) -> tuple[Any, ...]:
    return (
        r.id, r.job, r.input, r.status, r.priority, r.key, r.group, r.parent_id, r.attempt,
        r.max_attempts, r.created_at, r.run_at, r.available_at, r.deadline, r.started_at,
        r.completed_at, r.owner, r.output, r.error, r.reason, r.progress,
        r.pause_requested, r.claims, r.flow, r.slot, r.gate, r.recoveries, r.step_in_flight,
    )  # fmt: skip


INSERT_EXEC = (
    f"INSERT INTO executions ({EXEC_COLS}) VALUES ({', '.join('?' * len(EXEC_FIELDS))}) "
    "ON CONFLICT (job, key) WHERE key IS NOT NULL DO NOTHING"
)
SELECT_BY_KEY = f"SELECT {EXEC_COLS} FROM executions WHERE job = ? AND key = ?"
SELECT_ONE = f"SELECT {EXEC_COLS} FROM executions WHERE id = ?"
SELECT_MANY = f"SELECT {EXEC_COLS} FROM executions WHERE id IN {IDS}"
#: SELECT_MANY without the payloads (get_many(payloads=False)).
SELECT_MANY_BARE = SELECT_MANY.replace("input,", "'' AS input,", 1).replace(
    "output, error,", "NULL AS output, NULL AS error,", 1
)
WAKE_PARENT = (
    "UPDATE executions SET available_at = ?1 WHERE id = ?2 AND status = 'waiting' "
    "AND owner IS NULL AND (available_at IS NULL OR available_at > ?1)"
)
FINAL = (
    "UPDATE executions SET status = ?, output = ?, error = ?, reason = ?, owner = NULL, "
    "available_at = NULL, completed_at = ?, pause_requested = 0 WHERE id = ?"
)
FINAL_ID = FINAL + " RETURNING parent_id, slot"
FINAL_OWNED = FINAL + f" AND owner = ? AND {OWNED} RETURNING parent_id, slot"
RETRY_OWNED = (
    "UPDATE executions SET status = 'pending', owner = NULL, error = ?2, "
    "attempt = COALESCE(?3, attempt + 1), available_at = ?1, run_at = ?1, "
    "recoveries = 0, step_in_flight = NULL "
    f"WHERE id = ?4 AND owner = ?5 AND {OWNED} RETURNING slot"
)
CLAIMABLE = "status IN ('pending', 'running', 'waiting')"
READY = (
    f"FROM executions INDEXED BY executions_ready WHERE available_at IS NOT NULL AND {CLAIMABLE}"
)
TOP_PRIORITY = f"SELECT priority {READY} ORDER BY priority DESC LIMIT 1"
NEXT_PRIORITY = f"SELECT priority {READY} AND priority < ? ORDER BY priority DESC LIMIT 1"
CLAIM_LEVEL = (
    f"SELECT id, deadline, flow, status, started_at {READY} AND priority = ? "
    f"AND available_at <= ? AND job IN {IDS} "
    "ORDER BY available_at, id LIMIT ?"
)
#: The same, skipping executions of window gates already found full by this claim.
CLAIM_LEVEL_OPEN = (
    f"SELECT id, deadline, flow, status, started_at {READY} AND priority = ? "
    f"AND available_at <= ? AND job IN {IDS} "
    f"AND (slot IS NULL OR slot NOT IN {IDS}) "
    "ORDER BY available_at, id LIMIT ?"
)
PAUSED_JOBS = "SELECT job FROM paused_jobs"
PAUSE_JOB = "INSERT INTO paused_jobs (job, paused_at) VALUES (?, ?) ON CONFLICT (job) DO NOTHING"
RESUME_JOB = "DELETE FROM paused_jobs WHERE job = ?"
HAS_READY = f"SELECT 1 {READY} AND available_at <= ? AND job IN {IDS} LIMIT 1"
NEXT_WAKE = "SELECT min(wake_at) FROM gates INDEXED BY gates_wake WHERE wake_at IS NOT NULL"
GATE_DUE = "SELECT 1 FROM gates INDEXED BY gates_wake WHERE wake_at IS NOT NULL AND wake_at <= ?"
#: An execution still owned when claimed was never let go: its worker died or froze.
# The inputs are read by a SELECT after the UPDATE: RETURNING buffers its rows in a
# temporary table, which for a 50 MB input costs 150 MB more at the claim's peak.
CLAIM_TAKE = (
    "UPDATE executions SET status = 'running', owner = ?, available_at = ?, "
    "claims = claims + 1, recoveries = recoveries + (owner IS NOT NULL), "
    f"started_at = COALESCE(started_at, ?) WHERE id IN {IDS} "
    f"RETURNING {EXEC_RETURNING.replace('input,', 'NULL,', 1)}"
)
CLAIM_INPUTS = f"SELECT id, input FROM executions WHERE id IN {IDS}"
RENEW = (
    f"UPDATE executions SET available_at = ? WHERE id IN {IDS} AND owner = ? AND {OWNED} "
    "AND pause_requested = 0 RETURNING id"
)
#: The owner, status, pause request and recovery count: what a worker write checks first.
OWNER_STATE = "SELECT owner, status, pause_requested, recoveries FROM executions WHERE id = ?"
OWNER_STATES = (
    f"SELECT id, owner, status, pause_requested, recoveries FROM executions WHERE id IN {IDS}"
)
#: A checkpoint of a recovered execution: it got past what killed its workers.
RECOVERED = "UPDATE executions SET recoveries = 0, step_in_flight = NULL WHERE id = ?"
UPSERT_STEP = (
    f"INSERT INTO steps ({STEP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id, key) DO UPDATE SET kind = excluded.kind, "
    "name = excluded.name, status = excluded.status, result = excluded.result, "
    "error = excluded.error, attempts = excluded.attempts, "
    "job_attempt = excluded.job_attempt, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at"
)
SUSPEND = (
    "UPDATE executions SET "
    "status = CASE WHEN pause_requested THEN 'paused' ELSE ?1 END, "
    "available_at = CASE WHEN pause_requested OR ?1 = 'paused' THEN NULL ELSE ?2 END, "
    f"owner = NULL, pause_requested = 0 WHERE id = ?3 AND owner = ?4 AND {OWNED} "
    "RETURNING slot"
)
RELEASE = (
    "UPDATE executions SET owner = NULL, status = 'pending', available_at = ? "
    f"WHERE id = ? AND owner = ? AND {OWNED} RETURNING slot"
)
CANCEL_FIND = (
    "WITH RECURSIVE doomed(id) AS ("
    f" SELECT id FROM executions WHERE id IN {IDS} AND {LIVE}"
    " UNION SELECT e.id FROM executions e JOIN doomed d ON e.parent_id = d.id"
    f" WHERE e.{LIVE}"
    f") SELECT {EXEC_COLS} FROM executions WHERE id IN doomed"
)
CANCEL_SET = (
    "UPDATE executions SET status = 'cancelled', output = NULL, error = NULL, reason = ?, "
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
    "available_at = CASE WHEN status = 'paused' THEN ? ELSE available_at END, "
    "pause_requested = 0 WHERE id = ? RETURNING status"
)
RESTART = (
    "UPDATE executions SET status = 'pending', attempt = 1, owner = NULL, output = NULL, "
    "error = NULL, reason = NULL, progress = NULL, started_at = NULL, completed_at = NULL, "
    "available_at = ?1, run_at = ?1, claims = 0, recoveries = 0, step_in_flight = NULL "
    f"WHERE id = ?2 AND status IN ('failed', 'cancelled') RETURNING {EXEC_RETURNING}"
)
WAKE = (
    "UPDATE executions SET available_at = ? WHERE id = ? AND status = 'waiting' AND owner IS NULL"
)
#: Owned executions are running (or waiting) under a lease, so all are in the claim index.
EXPIRE = (
    "UPDATE executions INDEXED BY executions_ready SET available_at = ? "
    f"WHERE available_at IS NOT NULL AND {CLAIMABLE} AND owner = ? AND {OWNED}"
)


FINISHED = "status IN ('completed', 'failed', 'cancelled', 'skipped')"
PURGE = f"SELECT id FROM executions INDEXED BY executions_finished WHERE {FINISHED} AND status = ?"
#: A finished execution without completed_at counts as completed at 0, as in memory.py.
PURGE_KEEP = f"{PURGE} ORDER BY completed_at DESC, rowid LIMIT -1 OFFSET ?"
PURGE_BEFORE = f"{PURGE} AND (completed_at < ?2 OR (completed_at IS NULL AND ?2 > 0.0))"
FIND_CACHED = (
    f"SELECT {EXEC_COLS} FROM executions INDEXED BY executions_finished "
    f"WHERE {FINISHED} AND status = 'completed' AND job = ? AND completed_at >= ? AND input = ? "
    "ORDER BY completed_at DESC, rowid LIMIT 1"
)


def _stop_reason(row: Any, owner: str) -> str | None:
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


# --- writing operations (run on the writer thread, inside its transaction) ------------


def _insert(conn: sqlite3.Connection, rec: ExecutionRecord) -> ExecutionRecord:
    if rec.flow is not None:
        if rec.key is not None:
            row = conn.execute(SELECT_BY_KEY, (rec.job, rec.key)).fetchone()
            if row is not None:
                return _exec(row)
        instead = admit(SqliteFlowState(conn, rec.created_at), rec, FlowSpec.load(rec.flow))
        if instead is not None:
            return instead
    params = _exec_params(rec)
    if conn.execute(INSERT_EXEC, params).rowcount == 1:
        return ExecutionRecord(*params)  # a copy (dataclasses.replace is slow)
    row = conn.execute(SELECT_BY_KEY, (rec.job, rec.key)).fetchone()
    if row is None:  # an id collision would have raised; be loud about anything else
        raise StorageError(f"execution {rec.id} could not be stored")
    return _exec(row)


def _op_enqueue(conn: sqlite3.Connection, records: list[ExecutionRecord]) -> list[ExecutionRecord]:
    return [_insert(conn, r) for r in records]


def _final(
    conn: sqlite3.Connection,
    eid: str,
    status: str,
    output: str | None,
    error: str | None,
    reason: str | None,
    at: float,
) -> None:
    rows = conn.execute(FINAL_ID, (status, output, error, reason, at, eid)).fetchall()
    if rows and rows[0][0] is not None:
        conn.execute(WAKE_PARENT, (at, rows[0][0]))
    if rows and rows[0][1] is not None:
        freed([rows[0][1]], conn)


def _op_claim(
    conn: sqlite3.Connection, owner: str, jobs: list[str], limit: int, lease: float, at: float
) -> tuple[list[ExecutionRecord], float | None]:
    """The claim, and the earliest time a gate with parked work opens (or None)."""
    taken: list[ExecutionRecord] = []
    jobs = _unpaused(conn, jobs)
    if limit <= 0 or not jobs:
        return taken, None
    jobs_json = json.dumps(jobs)
    seen: set[str] = set()
    gates: ClaimGates | None = None
    parked = 0
    # a flow-free workload pays one indexed probe of an empty index here, and no more
    wake = conn.execute(NEXT_WAKE).fetchone()[0]
    if wake is not None and wake <= at:
        open_due_gates(conn, at)
    level = conn.execute(TOP_PRIORITY).fetchone()
    while level is not None and len(taken) < limit:
        priority = level[0]
        while len(taken) < limit:
            want = limit - len(taken)
            if gates is None or not gates.full:
                rows = conn.execute(CLAIM_LEVEL, (priority, at, jobs_json, want)).fetchall()
            else:
                full = json.dumps(sorted(gates.full))
                rows = conn.execute(
                    CLAIM_LEVEL_OPEN, (priority, at, jobs_json, full, want)
                ).fetchall()
            ids: list[str] = []
            expired = 0
            for ident, deadline, flow, status, started_at in rows:
                if deadline is not None and deadline <= at:
                    _final(conn, ident, FAILED, None, DEADLINE_ERROR, None, at)
                    expired += 1
                elif ident in seen:
                    continue
                elif flow is not None:
                    seen.add(ident)
                    if gates is None:
                        gates = ClaimGates(conn, at)
                    if gates.admit(ident, flow, status, started_at):
                        ids.append(ident)
                    else:
                        expired += 1  # parked: look further along this level
                        parked = gates.parked
                else:
                    ids.append(ident)
            if ids:
                seen.update(ids)
                ids_json = json.dumps(ids)
                got = {r[0]: r for r in conn.execute(CLAIM_TAKE, (owner, at + lease, at, ids_json))}
                inputs = dict(conn.execute(CLAIM_INPUTS, (ids_json,)).fetchall())
                for i in ids:
                    rec = _exec(got[i])
                    rec.input = inputs[i]
                    taken.append(rec)
            if not expired or len(rows) < want or parked >= MAX_PARK:
                break
        if parked >= MAX_PARK:
            break  # bound this transaction; the next claim parks on from here
        level = conn.execute(NEXT_PRIORITY, (priority,)).fetchone()
    if gates is not None or wake is not None:  # gates may have been set or opened
        wake = conn.execute(NEXT_WAKE).fetchone()[0]
    return taken, wake


def _unpaused(conn: sqlite3.Connection, jobs: list[str]) -> list[str]:
    """``jobs`` without the paused ones (one read of a table of a few rows, usually none)."""
    paused = {r[0] for r in conn.execute(PAUSED_JOBS)}
    return [j for j in jobs if j not in paused] if paused else jobs


def _op_has_ready(conn: sqlite3.Connection, jobs: list[str], at: float) -> bool:
    jobs = _unpaused(conn, jobs)
    if jobs and conn.execute(HAS_READY, (at, json.dumps(jobs))).fetchone() is not None:
        return True
    return conn.execute(GATE_DUE, (at,)).fetchone() is not None


def _op_renew(conn: sqlite3.Connection, owner: str, ids: list[str], until: float) -> dict[str, str]:
    ids_json = json.dumps(ids)
    renew_steps(conn, owner, until)
    renewed = {r[0] for r in conn.execute(RENEW, (until, ids_json, owner)).fetchall()}
    if len(renewed) == len(set(ids)):
        return {}
    rest = [i for i in ids if i not in renewed]
    state = {r[0]: r[1:] for r in conn.execute(OWNER_STATES, (json.dumps(rest),)).fetchall()}
    stops: dict[str, str] = {}
    for i in rest:
        why = _stop_reason(state.get(i), owner)
        stops[i] = why if why is not None else "lost"
    return stops


def _op_checkpoint(conn: sqlite3.Connection, eid: str, owner: str, cp: Checkpoint) -> str | None:
    state = conn.execute(OWNER_STATE, (eid,)).fetchone()
    why = _stop_reason(state, owner)
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
        _insert(conn, child)
    return why


def _op_finish(conn: sqlite3.Connection, eid: str, owner: str, fin: Finish) -> bool:
    at = now()
    if fin.status == PENDING:
        due = fin.available_at if fin.available_at is not None else at
        slots = conn.execute(RETRY_OWNED, (due, fin.error, fin.attempt or None, eid, owner))
        got = [r[0] for r in slots]
        freed(got, conn)
        if got and fin.logs:
            _insert_logs(conn, fin.logs)
        return len(got) == 1
    rows = conn.execute(
        FINAL_OWNED, (fin.status, fin.output, fin.error, fin.reason, at, eid, owner)
    ).fetchall()
    if not rows:
        return False
    if rows[0][0] is not None:
        conn.execute(WAKE_PARENT, (at, rows[0][0]))
    if rows[0][1] is not None:
        freed([rows[0][1]], conn)
    if fin.event is not None and fin.status == COMPLETED:
        deliver_job_events(conn, [fin.event])
    if fin.logs:
        _insert_logs(conn, fin.logs)
    return True


BULK_FINAL = (
    "UPDATE executions SET status = j.status, output = j.output, error = j.error, "
    "reason = j.reason, owner = NULL, available_at = NULL, completed_at = ?1, "
    "pause_requested = 0 FROM (SELECT value ->> 0 AS id, value ->> 1 AS owner, "
    "value ->> 2 AS status, value ->> 3 AS output, value ->> 4 AS error, "
    "value ->> 5 AS reason FROM json_each(?2)) AS j "
    "WHERE executions.id = j.id AND executions.owner = j.owner "
    "AND executions.status IN ('running', 'waiting') RETURNING id, parent_id, slot"
)


def _bulk_finish(
    conn: sqlite3.Connection, calls: list[tuple[str, str, Finish]]
) -> list[bool] | None:
    """Many final finishes in one statement (a worker's group-committed finishes)."""
    if len({c[0] for c in calls}) < len(calls) or any(
        c[2].status == PENDING or c[2].logs for c in calls
    ):
        return None  # a retry, log lines or the same execution twice: one by one
    at = now()
    rows = json.dumps([[e, o, f.status, f.output, f.error, f.reason] for e, o, f in calls])
    got = conn.execute(BULK_FINAL, (at, rows)).fetchall()
    done = {r[0]: r[1] for r in got}
    freed([r[2] for r in got], conn)
    for parent in {p for p in done.values() if p is not None}:
        conn.execute(WAKE_PARENT, (at, parent))
    events = [f.event for e, _, f in calls if e in done and f.event and f.status == COMPLETED]
    if events:
        deliver_job_events(conn, events)
    return [c[0] in done for c in calls]


def _op_suspend(
    conn: sqlite3.Connection, eid: str, owner: str, status: str, available_at: float | None
) -> bool:
    got = [r[0] for r in conn.execute(SUSPEND, (status, available_at, eid, owner))]
    freed(got, conn)
    return len(got) == 1


def _op_mark(conn: sqlite3.Connection, eid: str, owner: str, status: str) -> bool:
    if status == RUNNING and not gate_allows_running(conn, eid):
        return False
    got = [
        r[0]
        for r in conn.execute(
            "UPDATE executions SET status = ? WHERE id = ? AND owner = ?"
            " AND status IN ('running', 'waiting') RETURNING slot",
            (status, eid, owner),
        )
    ]
    if status == WAITING:
        freed(got, conn)
    return len(got) == 1


def _op_enter_step(conn: sqlite3.Connection, eid: str, owner: str, key: str) -> bool:
    sql = f"UPDATE executions SET step_in_flight = ? WHERE id = ? AND owner = ? AND {OWNED}"
    return conn.execute(sql, (key, eid, owner)).rowcount == 1


def _op_release(conn: sqlite3.Connection, owner: str, ids: list[str]) -> None:
    at = now()
    for i in ids:
        freed([r[0] for r in conn.execute(RELEASE, (at, i, owner))], conn)


def _op_cancel(
    conn: sqlite3.Connection, ids: list[str], reason: str | None
) -> list[ExecutionRecord]:
    at = now()
    out = [_exec(r) for r in conn.execute(CANCEL_FIND, (json.dumps(ids),)).fetchall()]
    if out:
        doomed = json.dumps([e.id for e in out])
        conn.execute(CANCEL_SET, (reason, at, doomed))
        conn.execute(CANCEL_WAKE, (at, doomed))
        freed([e.slot for e in out if e.gate is None], conn)
    return out


def _op_pause(conn: sqlite3.Connection, eid: str) -> str | None:
    rows = conn.execute(PAUSE, (eid,)).fetchall()
    return rows[0][0] if rows else None


def _op_resume(conn: sqlite3.Connection, eid: str) -> str | None:
    rows = conn.execute(RESUME, (now(), eid)).fetchall()
    return rows[0][0] if rows else None


def _op_restart(conn: sqlite3.Connection, eid: str, at: float) -> ExecutionRecord | None:
    rows = conn.execute(RESTART, (at, eid)).fetchall()
    if not rows:
        return None
    conn.execute("DELETE FROM steps WHERE execution_id = ?", (eid,))
    conn.execute("DELETE FROM logs WHERE execution_id = ?", (eid,))
    conn.execute("DELETE FROM waiters WHERE execution_id = ?", (eid,))
    return _exec(rows[0])


def _op_pause_job(conn: sqlite3.Connection, job: str, paused: bool, at: float) -> bool:
    if paused:
        return conn.execute(PAUSE_JOB, (job, at)).rowcount == 1
    return conn.execute(RESUME_JOB, (job,)).rowcount == 1


def _op_paused_jobs(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute(PAUSED_JOBS)}


def _op_wake(conn: sqlite3.Connection, ids: list[str], at: float) -> None:
    conn.executemany(WAKE, [(at, i) for i in ids])


PROGRESS = "UPDATE executions SET progress = ? WHERE id = ?"
PROGRESS_OWNED = PROGRESS + f" AND owner = ? AND {OWNED}"
INSERT_LOG = f"INSERT INTO logs ({LOG_COLS}) VALUES (?, ?, ?, ?, ?)"
INSERT_LOG_OWNED = (
    f"INSERT INTO logs ({LOG_COLS}) SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS "
    f"(SELECT 1 FROM executions WHERE id = ?1 AND owner = ?6 AND {OWNED})"
)


def _op_progress(conn: sqlite3.Connection, eid: str, owner: str | None, progress: str) -> bool:
    if owner is None:
        return conn.execute(PROGRESS, (progress, eid)).rowcount == 1
    return conn.execute(PROGRESS_OWNED, (progress, eid, owner)).rowcount == 1


def _insert_logs(conn: sqlite3.Connection, logs: Sequence[LogRecord]) -> None:
    conn.executemany(
        INSERT_LOG, [(g.execution_id, g.at, g.message, g.fields, g.step) for g in logs]
    )


def _op_logs(conn: sqlite3.Connection, owner: str | None, logs: list[LogRecord]) -> int:
    if owner is None:
        _insert_logs(conn, logs)
        return len(logs)
    before = conn.total_changes
    conn.executemany(
        INSERT_LOG_OWNED,
        [(g.execution_id, g.at, g.message, g.fields, g.step, owner) for g in logs],
    )
    return conn.total_changes - before


def _op_register(conn: sqlite3.Connection, wid: str, host: str, pid: int, at: float) -> None:
    conn.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?)", (wid, host, pid, at))


def _op_unregister(conn: sqlite3.Connection, wid: str) -> None:
    conn.execute("DELETE FROM workers WHERE id = ?", (wid,))


def _op_expire(conn: sqlite3.Connection, owner: str, at: float) -> int:
    n = conn.execute(EXPIRE, (at, owner)).rowcount
    conn.execute("DELETE FROM workers WHERE id = ?", (owner,))
    return n


def _op_purge(conn: sqlite3.Connection, status: str, before: float | None, keep: int | None) -> int:
    gone: set[str] = set()
    if keep is not None:
        gone.update(r[0] for r in conn.execute(PURGE_KEEP, (status, max(keep, 0))).fetchall())
    if before is not None:
        gone.update(r[0] for r in conn.execute(PURGE_BEFORE, (status, before)).fetchall())
    doomed = json.dumps(sorted(gone))
    tables = (("steps", "execution_id"), ("logs", "execution_id"), ("waiters", "execution_id"))
    for table, col in (*tables, ("executions", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {col} IN {IDS}", (doomed,))
    return len(gone)


# --- reading operations (run on the reader thread) --------------------------------------


def _op_get(conn: sqlite3.Connection, eid: str) -> ExecutionRecord | None:
    row = conn.execute(SELECT_ONE, (eid,)).fetchone()
    return _exec(row) if row is not None else None


def _op_get_many(conn: sqlite3.Connection, ids: list[str], payloads: bool) -> list[ExecutionRecord]:
    sql = SELECT_MANY if payloads else SELECT_MANY_BARE
    rows = {r[0]: r for r in conn.execute(sql, (json.dumps(ids),)).fetchall()}
    return [_exec(rows[i]) for i in ids if i in rows]


_RANGES = (
    ("started_before", "started_at < ?"),
    ("started_after", "started_at > ?"),
    ("completed_before", "completed_at < ?"),
    ("completed_after", "completed_at > ?"),
    ("attempts", "attempt = ?"),
    ("attempts_lt", "attempt < ?"),
    ("attempts_gt", "attempt > ?"),
    ("group", '"group" = ?'),
    ("parent_id", "parent_id = ?"),
)


def _op_list(
    conn: sqlite3.Connection, flt: ExecutionFilter, limit: int, cursor: str | None
) -> Page:
    conds: list[str] = []
    params: list[Any] = []
    for name, col in (("ids", "id"), ("job", "job"), ("status", "status")):
        values = getattr(flt, name)
        if values is not None:
            conds.append(f"{col} IN {IDS}")
            params.append(json.dumps(list(values)))
    for name, cond in _RANGES:
        value = getattr(flt, name)
        if value is not None:
            conds.append(cond)
            params.append(value)
    if cursor is not None:
        conds.append("(created_at, id) < (?, ?)")
        params.extend(decode_cursor(cursor))
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    sql = f"SELECT {EXEC_COLS} FROM executions{where} ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(max(limit, 0) + 1)
    rows = conn.execute(sql, params).fetchall()
    page = [_exec(r) for r in rows[: max(limit, 0)]]
    more = len(rows) > limit
    nxt = encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
    return Page(page, nxt)


def _op_find_cached(
    conn: sqlite3.Connection, job: str, input: str, since: float
) -> ExecutionRecord | None:
    row = conn.execute(FIND_CACHED, (job, since, input)).fetchone()
    return _exec(row) if row is not None else None


def _op_steps(conn: sqlite3.Connection, eid: str) -> list[StepRecord]:
    rows = conn.execute(
        f"SELECT {STEP_COLS} FROM steps WHERE execution_id = ? ORDER BY started_at, seq", (eid,)
    ).fetchall()
    return [StepRecord(*r) for r in rows]


def _op_read_logs(conn: sqlite3.Connection, eid: str) -> list[LogRecord]:
    rows = conn.execute(
        f"SELECT {LOG_COLS} FROM logs WHERE execution_id = ? ORDER BY seq", (eid,)
    ).fetchall()
    return [LogRecord(*r) for r in rows]


def _op_workers(conn: sqlite3.Connection, host: str) -> list[tuple[str, int]]:
    rows = conn.execute("SELECT id, pid FROM workers WHERE host = ? ORDER BY rowid", (host,))
    return [(r[0], r[1]) for r in rows.fetchall()]


RUNTIME = (
    "FROM executions WHERE status = 'completed' AND started_at IS NOT NULL "
    "AND completed_at IS NOT NULL"
)


def _op_stats(conn: sqlite3.Connection) -> Stats:
    by_status = dict.fromkeys(STATUSES, 0)
    by_job: dict[str, dict[str, int]] = {}
    retries = 0
    for job, status, count, extra in conn.execute(
        "SELECT job, status, count(*), sum(attempt - 1) FROM executions GROUP BY job, status"
    ).fetchall():
        by_status[status] = by_status.get(status, 0) + count
        by_job.setdefault(job, {})[status] = count
        retries += extra or 0
    n, total = conn.execute(
        f"SELECT count(*), total(completed_at - started_at) {RUNTIME}"
    ).fetchone()
    mean = p95 = None
    if n:
        mean = total / n
        rank = max(0, min(n - 1, round(0.95 * n + 0.5) - 1))
        p95 = conn.execute(
            f"SELECT completed_at - started_at AS rt {RUNTIME} ORDER BY rt LIMIT 1 OFFSET ?",
            (rank,),
        ).fetchone()[0]
    return Stats(by_status, by_job, retries, mean, p95)


_Bulk = Callable[[sqlite3.Connection, list[Any]], "list[Any] | None"]


def _bulk_checkpoint(
    conn: sqlite3.Connection, calls: list[tuple[str, str, Checkpoint]]
) -> list[str | None] | None:
    """Many checkpoints of different executions: one owner read, one executemany."""
    if len({c[0] for c in calls}) < len(calls) or any(c[2].children for c in calls):
        return None  # the same execution twice, or children to insert: one by one
    state = {
        r[0]: r[1:]
        for r in conn.execute(OWNER_STATES, (json.dumps([c[0] for c in calls]),)).fetchall()
    }
    whys = [_stop_reason(state.get(e), o) for e, o, _ in calls]
    recovered = [
        (e,) for (e, _, _), why in zip(calls, whys, strict=True)
        if why in (None, "paused") and state[e][3]
    ]  # fmt: skip
    if recovered:
        conn.executemany(RECOVERED, recovered)
    conn.executemany(
        UPSERT_STEP,
        [
            (e, s.key, s.kind, s.name, s.status, s.result, s.error, s.attempts, s.job_attempt,
             s.started_at, s.finished_at)
            for (e, _, cp), why in zip(calls, whys, strict=True)
            if why is None or why == "paused"
            for s in (cp.step,)
        ],
    )  # fmt: skip
    return whys


#: Operations that have a one-statement form for a run of them in a batch.
BULK: dict[Callable[..., Any], _Bulk] = {
    _op_finish: _bulk_finish,
    _op_checkpoint: _bulk_checkpoint,
    _op_send: bulk_send,
}

# --- the threads --------------------------------------------------------------------------

_Op = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]
_Result = tuple["asyncio.Future[Any]", bool, Any]


def _deliver(results: list[_Result]) -> None:
    for fut, ok, value in results:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class _ConnThread:
    """One connection owned by one thread that runs queued operations in batches."""

    def __init__(self, conn: sqlite3.Connection, name: str, path: str, write: bool) -> None:
        self.conn = conn
        self.path = path
        self.write = write
        self.ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        #: rung after each commit that changed something (writer only; None: no bell)
        self.bell: Doorbell | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.ops.put((fn, args, fut))
        return fut

    def stop(self) -> asyncio.Future[None]:
        """Run what is queued, then close the connection and end the thread."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ops.put((_stop, (), fut))
        return fut

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            err = StorageError(f"SQLite storage {self.path}: {exc}")
            err.__cause__ = exc
            return err
        return exc

    def _main(self) -> None:
        ops = self.ops
        running = True
        while running:
            batch = [ops.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(ops.get_nowait())
                except queue.Empty:
                    break
            stop_at = next((i for i, op in enumerate(batch) if op[0] is _stop), None)
            if stop_at is not None:
                running = False
                rest, batch = batch[stop_at:], batch[:stop_at]
            if batch:
                results = self._run_write(batch) if self.write else self._run_read(batch)
                self._send(results)
            if not running:
                self._close(rest)

    def _close(self, rest: list[_Op]) -> None:
        error: BaseException | None = None
        try:
            self.conn.close()
        except sqlite3.Error as exc:  # pragma: no cover - close rarely fails
            error = self._error(exc)
        closed = StorageError(f"SQLite storage {self.path} is closed")
        out: list[_Result] = []
        for i, (fn, _, fut) in enumerate(rest):
            if fut is None:
                continue
            if i == 0 and fn is _stop:
                out.append((fut, error is None, error))
            else:
                out.append((fut, False, closed))
        self._send(out)

    @staticmethod
    def _send(results: list[_Result]) -> None:
        if not results:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for r in results:
            by_loop.setdefault(r[0].get_loop(), []).append(r)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _run_read(self, batch: list[_Op]) -> list[_Result]:
        conn = self.conn
        out: list[_Result] = []
        for fn, args, fut in batch:
            assert fut is not None
            try:
                out.append((fut, True, fn(conn, *args)))
            except Exception as exc:
                out.append((fut, False, self._error(exc)))
        return out

    def _run_write(self, batch: list[_Op]) -> list[_Result]:
        conn = self.conn
        out: list[_Result] = []
        try:
            changes = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # alone in its transaction: no savepoint needed
                fn, args, fut = batch[0]
                assert fut is not None
                try:
                    out.append((fut, True, fn(conn, *args)))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    return [(fut, False, self._error(exc))]
            else:
                i = 0
                while i < len(batch):
                    j = i + 1
                    bulk = BULK.get(batch[i][0])
                    if bulk is not None:
                        while j < len(batch) and batch[j][0] is batch[i][0]:
                            j += 1
                    if j - i == 1 or bulk is None or not self._bulk(bulk, batch[i:j], out):
                        for op in batch[i:j]:
                            self._one(op, out)
                    i = j
            conn.execute("COMMIT")
            if self.bell is not None and conn.total_changes != changes:
                self.bell.ring()  # never raises
        except Exception as exc:  # BEGIN, savepoint machinery or COMMIT failed: nothing stands
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            err = self._error(exc)
            return [(fut, False, err) for _, _, fut in batch if fut is not None]
        return out

    def _one(self, op: _Op, out: list[_Result]) -> None:
        """Run one operation of a batch in its own savepoint."""
        fn, args, fut = op
        assert fut is not None
        conn = self.conn
        conn.execute("SAVEPOINT op")
        try:
            value = fn(conn, *args)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            out.append((fut, False, self._error(exc)))
        else:
            conn.execute("RELEASE op")
            out.append((fut, True, value))

    def _bulk(self, bulk: _Bulk, ops: list[_Op], out: list[_Result]) -> bool:
        """Run a run of same-kind operations as one statement; False: run them one by one."""
        conn = self.conn
        conn.execute("SAVEPOINT bulk")
        try:
            values = bulk(conn, [op[1] for op in ops])
        except Exception:
            values = None
        if values is None:
            conn.execute("ROLLBACK TO bulk")
            conn.execute("RELEASE bulk")
            return False
        conn.execute("RELEASE bulk")
        out.extend((fut, True, v) for (_, _, fut), v in zip(ops, values, strict=True) if fut)
        return True


def _stop(conn: sqlite3.Connection) -> None:  # a marker, never called
    raise AssertionError("unreachable")


# --- the backend ---------------------------------------------------------------------------


class SqliteStorage(SqliteEvents, Storage):
    """Executions, steps and logs in one SQLite file (WAL mode, group commit)."""

    polls = True

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "full", busy_timeout: float = 30.0
    ) -> None:
        self.path = os.fspath(path)
        sync = synchronous.lower()
        if sync not in SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS)}")
        self.synchronous = sync
        self.busy_timeout = float(busy_timeout)
        self._writer: _ConnThread | None = None
        self._reader: _ConnThread | None = None
        self._watch: sqlite3.Connection | None = None
        self._watch_cur: sqlite3.Cursor | None = None
        self._seen: int | None = None
        self._bell: Doorbell | None = None

    def __repr__(self) -> str:
        return f"SqliteStorage({self.path!r}, synchronous={self.synchronous!r})"

    # --- lifecycle ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_sync(self) -> list[sqlite3.Connection]:
        _inspect(self.path, self.busy_timeout)
        conns: list[sqlite3.Connection] = []
        try:
            conns.append(self._connect())
            writer = conns[0]
            mode = _wal(writer, self.busy_timeout)
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot put SQLite database {self.path} in WAL mode ({mode})")
            _migrate(self.path, writer)
            conns.append(self._connect())
            conns.append(self._connect())
        except BaseException as exc:
            for c in conns:
                c.close()
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise _unreadable(self.path, exc) from exc
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open qanat database {self.path}: {exc}") from exc
            raise
        return conns

    async def open(self) -> None:
        if self._writer is not None:
            return
        writer, reader, watch = await asyncio.to_thread(self._open_sync)
        self._writer = _ConnThread(writer, "qanat-sqlite-writer", self.path, write=True)
        self._reader = _ConnThread(reader, "qanat-sqlite-reader", self.path, write=False)
        self._watch = watch
        self._watch_cur = watch.cursor()
        self._seen = None
        if self.path not in ("", ":memory:"):
            self._bell = self._writer.bell = Doorbell(self.path)

    async def close(self) -> None:
        writer, reader, watch = self._writer, self._reader, self._watch
        self._writer = self._reader = None
        self._watch = self._watch_cur = None
        if reader is not None:
            await reader.stop()
            reader.thread.join()
        if watch is not None:
            watch.close()
        if writer is not None:
            await writer.stop()  # commits what was queued before it
            writer.thread.join()
        bell, self._bell = self._bell, None
        if bell is not None:
            bell.close()  # the writer thread, its only ringer, has ended

    async def __aenter__(self) -> SqliteStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        return None if self._bell is None else self._bell.listen(callback)

    async def changed(self) -> bool:
        cur = self._watch_cur
        if cur is None:
            return True
        version: int = cur.execute("PRAGMA data_version").fetchone()[0]
        seen, self._seen = self._seen, version
        return seen != version

    def _w(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._writer is None:
            raise StorageError(f"SQLite storage {self.path} is not open")
        return self._writer.submit(fn, args)

    def _r(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._reader is None:
            raise StorageError(f"SQLite storage {self.path} is not open")
        return self._reader.submit(fn, args)

    # --- queue ------------------------------------------------------------------------

    async def enqueue(self, records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
        if not records:
            return []
        return await self._w(_op_enqueue, list(records))

    async def claim(
        self, owner: str, jobs: Sequence[str], limit: int, lease: float, at: float
    ) -> list[ExecutionRecord]:
        taken, self.next_wake = await self._w(_op_claim, owner, list(jobs), limit, lease, at)
        return taken

    async def has_ready(self, jobs: Sequence[str], at: float) -> bool:
        found: bool = await self._r(_op_has_ready, list(jobs), at)
        return found

    async def renew(self, owner: str, ids: Sequence[str], until: float) -> dict[str, str]:
        if not ids:
            return {}
        return await self._w(_op_renew, owner, list(ids), until)

    async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        return await self._w(_op_checkpoint, execution_id, owner, cp)

    async def finish(self, execution_id: str, owner: str, fin: Finish) -> bool:
        if fin.children or fin.failures:  # see sqlite_events.py (fin.logs: in _op_finish)
            return await self._finish_triggers(execution_id, owner, fin)
        return await self._w(_op_finish, execution_id, owner, fin)

    async def suspend(
        self, execution_id: str, owner: str, status: str, available_at: float | None
    ) -> bool:
        return await self._w(_op_suspend, execution_id, owner, status, available_at)

    async def mark(self, execution_id: str, owner: str, status: str) -> bool:
        result: bool = await self._w(_op_mark, execution_id, owner, status)
        return result

    async def release(self, owner: str, ids: Sequence[str]) -> None:
        if ids:
            await self._w(_op_release, owner, list(ids))

    async def enter_step(self, execution_id: str, owner: str, key: str) -> bool:
        return await self._w(_op_enter_step, execution_id, owner, key)

    # --- flow control -------------------------------------------------------------

    async def refill(self, at: float) -> int:
        return await self._w(op_refill, at)

    async def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, until: float
    ) -> bool:
        return await self._w(op_acquire_step, name, holder, owner, limit, until)

    async def release_step(self, name: str, holder: str) -> None:
        await self._w(op_release_step, name, holder)

    # --- control ----------------------------------------------------------------------

    async def cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        if not ids:
            return []
        return await self._w(_op_cancel, list(ids), reason)

    async def pause(self, execution_id: str) -> str | None:
        return await self._w(_op_pause, execution_id)

    async def resume(self, execution_id: str) -> str | None:
        return await self._w(_op_resume, execution_id)

    async def restart(self, execution_id: str, at: float) -> ExecutionRecord | None:
        return await self._w(_op_restart, execution_id, at)

    async def pause_job(self, job: str, paused: bool) -> bool:
        return await self._w(_op_pause_job, job, paused, now())

    async def paused_jobs(self) -> builtins.set[str]:
        return await self._r(_op_paused_jobs)

    async def wake(self, ids: Sequence[str], at: float) -> None:
        if ids:
            await self._w(_op_wake, list(ids), at)

    # --- reading ----------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        return await self._r(_op_get, execution_id)

    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        if not ids:
            return []
        return await self._r(_op_get_many, list(ids), payloads)

    async def query(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        if cursor is not None:
            decode_cursor(cursor)  # a bad cursor is the caller's error, raised here
        return await self._r(_op_list, flt, limit, cursor)

    async def find_cached(self, job: str, input: str, since: float) -> ExecutionRecord | None:
        return await self._r(_op_find_cached, job, input, since)

    async def steps(self, execution_id: str) -> builtins.list[StepRecord]:
        return await self._r(_op_steps, execution_id)

    async def stats(self) -> Stats:
        return await self._r(_op_stats)

    # --- progress and logs --------------------------------------------------------------

    async def set_progress(self, execution_id: str, owner: str | None, progress: str) -> bool:
        return await self._w(_op_progress, execution_id, owner, progress)

    async def append_logs(self, owner: str | None, logs: Sequence[LogRecord]) -> int:
        if not logs:
            return 0
        return await self._w(_op_logs, owner, list(logs))

    async def logs(self, execution_id: str) -> builtins.list[LogRecord]:
        return await self._r(_op_read_logs, execution_id)

    # --- housekeeping -----------------------------------------------------------------------

    async def register_worker(self, worker_id: str, host: str, pid: int, at: float) -> None:
        await self._w(_op_register, worker_id, host, pid, at)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._w(_op_unregister, worker_id)

    async def workers(self, host: str) -> builtins.list[tuple[str, int]]:
        return await self._r(_op_workers, host)

    async def expire_owner(self, owner: str, at: float) -> int:
        return await self._w(_op_expire, owner, at)

    async def purge(self, status: str, before: float | None, keep: int | None) -> int:
        return await self._w(_op_purge, status, before, keep)


__all__ = ["SqliteStorage", "migrations", "schema_version"]
