"""Reading in SQL (get, query, cache look-ups, steps, stats, workers) and retention
(purge). Reads run on the reader thread; ``op_purge`` on the writer."""

from __future__ import annotations

import json
from typing import Any

from qanat.storage.base import (
    STATUSES,
    ExecutionFilter,
    ExecutionRecord,
    Page,
    Stats,
    WorkerRecord,
    decode_cursor,
    encode_cursor,
)
from qanat.storage.sqlcore.dialect import Conn
from qanat.storage.sqlcore.records import (
    EXEC_COLS,
    EXEC_FROM,
    FINISHED,
    IDS,
    SELECT_MANY,
    SELECT_MANY_BARE,
    SELECT_ONE,
    execution,
)

PURGE = f"SELECT id FROM executions INDEXED BY executions_finished WHERE {FINISHED} AND status = ?"
#: A finished execution without completed_at counts as completed at 0, as in memory.py.
PURGE_KEEP = f"{PURGE} ORDER BY completed_at DESC, rowid LIMIT -1 OFFSET ?"
PURGE_BEFORE = f"{PURGE} AND (completed_at < ?2 OR (completed_at IS NULL AND ?2 > 0.0))"
FIND_CACHED = (
    f"SELECT {EXEC_COLS} FROM executions INDEXED BY executions_finished "
    "JOIN inputs USING (id) LEFT JOIN outputs USING (id) "
    f"WHERE {FINISHED} AND status = 'completed' AND job = ? AND completed_at >= ? AND input = ? "
    "ORDER BY completed_at DESC, executions.rowid LIMIT 1"
)
RUNTIME = (
    "FROM executions WHERE status = 'completed' AND started_at IS NOT NULL "
    "AND completed_at IS NOT NULL"
)
COUNTS = "SELECT job, status, count(*), sum(attempt - 1) FROM executions GROUP BY job, status"
RUNTIMES = f"SELECT count(*), total(completed_at - started_at) {RUNTIME}"
RUNTIME_AT = f"SELECT completed_at - started_at AS rt {RUNTIME} ORDER BY rt LIMIT 1 OFFSET ?"
WORKERS = "SELECT id, pid FROM workers WHERE host = ? ORDER BY rowid"
ALL_WORKERS = "SELECT id, host, pid, registered_at FROM workers ORDER BY registered_at, id"
#: Owned live executions: the claim index holds exactly these rows (available_at set).
HELD = (
    "SELECT owner, id, available_at FROM executions WHERE owner IS NOT NULL "
    "AND available_at IS NOT NULL AND status IN ('running', 'waiting') ORDER BY id"
)

#: Seconds by which a created_at may exceed the started_at or completed_at of the same
#: execution (each is read from an estimate of the storage's clock).
CREATED_MARGIN = 3600.0

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


def op_get(conn: Conn, eid: str) -> ExecutionRecord | None:
    row = conn.execute(SELECT_ONE, (eid,)).fetchone()
    return execution(row) if row is not None else None


def bulk_get(conn: Conn, calls: list[tuple[str]]) -> list[ExecutionRecord | None]:
    """Many ``op_get`` queued together (a parent awaiting its fan-out) as one read."""
    found = op_get_many(conn, list(dict.fromkeys(eid for (eid,) in calls)), True)
    by_id = {r.id: r for r in found}
    return [by_id[eid].copy() if eid in by_id else None for (eid,) in calls]


PAUSED_JOBS = "SELECT job FROM paused_jobs"


def op_get_many(conn: Conn, ids: list[str], payloads: bool) -> list[ExecutionRecord]:
    sql = SELECT_MANY if payloads else SELECT_MANY_BARE
    rows = {r[0]: r for r in conn.execute(sql, (json.dumps(ids),)).fetchall()}
    return [execution(rows[i]) for i in ids if i in rows]


#: ``finished_among``: SELECT_MANY of the finished ones only (the others are not sent).
SELECT_FINISHED_AMONG = f"{SELECT_MANY} AND {FINISHED}"


def op_finished_among(conn: Conn, ids: list[str]) -> list[ExecutionRecord]:
    return [execution(r) for r in conn.execute(SELECT_FINISHED_AMONG, (json.dumps(ids),))]


def _where(flt: ExecutionFilter) -> tuple[list[str], list[Any]]:
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
    # An execution starts and completes after it was created, so an upper bound on
    # either is one on created_at too (with an hour's margin for clock estimates): the
    # listing then walks the created index from there, not from the newest row.
    bounds = [b for b in (flt.started_before, flt.completed_before) if b is not None]
    if bounds:
        conds.append("created_at < ?")
        params.append(min(bounds) + CREATED_MARGIN)
    if flt.search is not None:
        conds.append("(id = ? OR input LIKE ? ESCAPE '!')")
        escaped = flt.search.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        params.extend((flt.search, f"%{escaped}%"))
    return conds, params


def op_count(conn: Conn, flt: ExecutionFilter) -> int:
    conds, params = _where(flt)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    table = "executions JOIN inputs USING (id)" if flt.search is not None else "executions"
    n: int = conn.execute(f"SELECT count(*) FROM {table}{where}", params).fetchone()[0]
    return n


def op_status_counts(conn: Conn) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for job, status, count, _ in conn.execute(COUNTS).fetchall():
        out.setdefault(job, {})[status] = count
    return out


def op_list(conn: Conn, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
    conds, params = _where(flt)
    if cursor is not None:
        conds.append("(created_at, id) < (?, ?)")
        params.extend(decode_cursor(cursor))
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    sql = f"SELECT {EXEC_COLS} FROM {EXEC_FROM}{where} ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(max(limit, 0) + 1)
    rows = conn.execute(sql, params).fetchall()
    page = [execution(r) for r in rows[: max(limit, 0)]]
    more = len(rows) > limit
    nxt = encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
    return Page(page, nxt)


def op_paused_jobs(conn: Conn) -> set[str]:
    return {r[0] for r in conn.execute(PAUSED_JOBS).fetchall()}


def op_find_cached(conn: Conn, job: str, input: str, since: float) -> ExecutionRecord | None:
    row = conn.execute(FIND_CACHED, (job, since, input)).fetchone()
    return execution(row) if row is not None else None


def op_workers(conn: Conn, host: str) -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in conn.execute(WORKERS, (host,)).fetchall()]


def op_worker_list(conn: Conn) -> list[WorkerRecord]:
    found = {r[0]: WorkerRecord(*r) for r in conn.execute(ALL_WORKERS).fetchall()}
    for owner, eid, until in conn.execute(HELD).fetchall():
        rec = found.get(owner)
        if rec is not None:
            rec.held.append(eid)
            rec.lease_until = max(rec.lease_until or 0.0, until)
    return list(found.values())


def op_stats(conn: Conn) -> Stats:
    by_status = dict.fromkeys(STATUSES, 0)
    by_job: dict[str, dict[str, int]] = {}
    retries = 0
    for job, status, count, extra in conn.execute(COUNTS).fetchall():
        by_status[status] = by_status.get(status, 0) + count
        by_job.setdefault(job, {})[status] = count
        retries += extra or 0
    n, total = conn.execute(RUNTIMES).fetchone()
    mean = p95 = None
    if n:
        mean = total / n
        rank = max(0, min(n - 1, round(0.95 * n + 0.5) - 1))
        p95 = conn.execute(RUNTIME_AT, (rank,)).fetchone()[0]
    return Stats(by_status, by_job, retries, mean, p95)


def op_purge(conn: Conn, status: str, before: float | None, keep: int | None) -> int:
    gone: set[str] = set()
    if keep is not None:
        gone.update(r[0] for r in conn.execute(PURGE_KEEP, (status, max(keep, 0))).fetchall())
    if before is not None:
        gone.update(r[0] for r in conn.execute(PURGE_BEFORE, (status, before)).fetchall())
    doomed = json.dumps(sorted(gone))
    tables = (
        ("steps", "execution_id"),
        ("logs", "execution_id"),
        ("waiters", "execution_id"),
        ("inputs", "id"),
        ("outputs", "id"),
    )
    for table, col in (*tables, ("executions", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {col} IN {IDS}", (doomed,))
    return len(gone)
