"""The claim in SQL, and what a claiming worker asks besides: ``has_ready`` (might a
claim find something?) and ``renew`` (extend its leases, learn which to stop).

A claim walks the claim index (``executions_ready``: claimable rows only) one priority
level at a time, oldest ``available_at`` first, fails what passed its deadline, lets
flow control decide each gated candidate (``flow.ClaimGates``: parked or counted), and
takes the rest in one update. On SQLite the transaction is the only writer; on
PostgreSQL the candidates are chosen ``FOR UPDATE SKIP LOCKED`` (so claimers never
wait for one another or take the same row) and the update re-checks that each row is
still claimable (``Dialect.claim_take_check``).
"""

from __future__ import annotations

import functools
import json

from qanat.storage.base import ExecutionRecord
from qanat.storage.sqlcore.dialect import POSTGRES, Conn, Dialect
from qanat.storage.sqlcore.executions import expire_deadline
from qanat.storage.sqlcore.flow import ClaimGates, open_due_gates, renew_steps
from qanat.storage.sqlcore.records import (
    CLAIMABLE,
    EXEC_COLS,
    EXEC_RETURNING,
    IDS,
    OWNED,
    OWNER_STATES,
    ROW_COLS,
    execution,
    stop_reason,
)

#: At most this many executions are parked by one claim (bounds its transaction).
MAX_PARK = 1000

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
NEXT_WAKE = "SELECT min(wake_at) FROM gates INDEXED BY gates_wake WHERE wake_at IS NOT NULL"
#: What a claim reads first, in one statement (one round trip on PostgreSQL): the paused
#: jobs (a JSON array), the next gate wake-up and the top priority level with claimable
#: work; PostgreSQL adds its clock, so the transaction's one clock read
#: (``Dialect.now``) rides along.
CLAIM_START = (
    f"SELECT (SELECT json_group_array(job) FROM paused_jobs), ({NEXT_WAKE}), ({TOP_PRIORITY})"
)
POSTGRES.overrides[CLAIM_START] = (
    "SELECT (SELECT CAST(json_agg(job) AS text) FROM paused_jobs), "
    f"({NEXT_WAKE}), ({TOP_PRIORITY}), extract(epoch from clock_timestamp())::double precision"
)
#: Might a claim find something: a claimable execution of an unpaused job, or a gate
#: due to open. One statement (one round trip on PostgreSQL, where every worker asks
#: this after each change it hears of).
HAS_READY = (
    f"SELECT EXISTS (SELECT 1 {READY} AND available_at <= ?1 "
    "AND job IN (SELECT value FROM json_each(?2)) "
    "AND job NOT IN (SELECT job FROM paused_jobs)) OR EXISTS (SELECT 1 FROM gates "
    "INDEXED BY gates_wake WHERE wake_at IS NOT NULL AND wake_at <= ?1)"
)
#: An execution still owned when claimed was never let go: its worker died or froze.
# The inputs are read from their table by a SELECT after the UPDATE (they are not in the
# executions row; RETURNING would also buffer them in a temporary table on SQLite).
CLAIM_TAKE = (
    "UPDATE executions SET status = 'running', owner = ?, available_at = ?, "
    "claims = claims + 1, "
    "recoveries = recoveries + CASE WHEN owner IS NOT NULL THEN 1 ELSE 0 END, "
    f"started_at = COALESCE(started_at, ?) WHERE id IN {IDS}"
)
CLAIM_INPUTS = f"SELECT id, input FROM inputs WHERE id IN {IDS}"
RENEW = (
    f"UPDATE executions SET available_at = ? WHERE id IN {IDS} AND owner = ? AND {OWNED} "
    "AND pause_requested = 0 RETURNING id"
)


@functools.cache
def _take(d: Dialect) -> str:
    """The claim's update; with writable CTEs (PostgreSQL) it returns the inputs too (one
    round trip less), else they are read by ``CLAIM_INPUTS`` after it."""
    if d.writable_cte:
        cols = EXEC_COLS.replace("output,", "NULL AS output,", 1)
        return (
            f"WITH t AS ({CLAIM_TAKE}{d.claim_take_check} RETURNING {ROW_COLS}) "
            f"SELECT {cols} FROM t JOIN inputs USING (id)"
        )
    return f"{CLAIM_TAKE}{d.claim_take_check} RETURNING {EXEC_RETURNING}"


def op_claim(
    conn: Conn, owner: str, jobs: list[str], limit: int, lease: float, at: float | None
) -> tuple[list[ExecutionRecord], float | None]:
    """The claim, and the earliest time a gate with parked work opens (or None)."""
    taken: list[ExecutionRecord] = []
    d = conn.dialect
    # a flow-free workload pays one indexed probe of an empty index here, and no more
    start = conn.execute(CLAIM_START).fetchone()
    paused, wake, top = set(json.loads(start[0] or "[]")), start[1], start[2]
    if len(start) > 3:
        d.adopt_now(conn, start[3])  # the server's clock, read by the same statement
    jobs = [j for j in jobs if j not in paused] if paused else jobs
    if limit <= 0 or not jobs:
        return taken, None
    if at is None:
        at = d.now(conn)
    take = _take(d)
    with_inputs = d.writable_cte
    jobs_json = json.dumps(jobs)
    seen: set[str] = set()
    gates: ClaimGates | None = None
    parked = 0
    if wake is not None and wake <= at:
        open_due_gates(conn, at)  # unparked work may sit higher: read the top again
        top = conn.execute(TOP_PRIORITY).fetchone()
    else:
        top = None if top is None else (top,)
    level = top
    while level is not None and len(taken) < limit:
        priority = level[0]
        while len(taken) < limit:
            want = limit - len(taken)
            if gates is None or not gates.full:
                rows = conn.execute(
                    d.skip_locked(CLAIM_LEVEL), (priority, at, jobs_json, want)
                ).fetchall()
            else:
                full = json.dumps(sorted(gates.full))
                rows = conn.execute(
                    d.skip_locked(CLAIM_LEVEL_OPEN), (priority, at, jobs_json, full, want)
                ).fetchall()
            ids: list[str] = []
            expired = 0
            for ident, deadline, flow, status, started_at in rows:
                if deadline is not None and deadline <= at:
                    expire_deadline(conn, ident, at)
                    expired += 1
                elif ident in seen:
                    continue
                elif flow is not None:
                    if gates is None:
                        gates = ClaimGates(conn, at)
                    admitted = gates.admit(ident, flow, status, started_at)
                    if admitted is None:
                        continue  # another transaction decides on its gates now: pass over
                    seen.add(ident)
                    if admitted:
                        ids.append(ident)
                    else:
                        expired += 1  # parked: look further along this level
                        parked = gates.parked
                else:
                    ids.append(ident)
            if ids:
                seen.update(ids)
                ids_json = json.dumps(ids)
                got = {r[0]: r for r in conn.execute(take, (owner, at + lease, at, ids_json))}
                inputs = {} if with_inputs else dict(conn.execute(CLAIM_INPUTS, (ids_json,)))
                for i in ids:
                    if i in got:  # (on PostgreSQL the take re-checks each row)
                        rec = execution(got[i])
                        if not with_inputs:
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


def op_has_ready(conn: Conn, jobs: list[str], at: float) -> bool:
    return bool(conn.execute(HAS_READY, (at, json.dumps(jobs))).fetchone()[0])


def op_renew(
    conn: Conn, owner: str, ids: list[str], lease: float, at: float | None
) -> dict[str, str]:
    until = (conn.dialect.now(conn) if at is None else at) + lease
    ids_json = json.dumps(ids)
    renew_steps(conn, owner, until)
    renewed = {r[0] for r in conn.execute(RENEW, (until, ids_json, owner)).fetchall()}
    if len(renewed) == len(set(ids)):
        return {}
    rest = [i for i in ids if i not in renewed]
    state = {r[0]: r[1:] for r in conn.execute(OWNER_STATES, (json.dumps(rest),)).fetchall()}
    stops: dict[str, str] = {}
    for i in rest:
        why = stop_reason(state.get(i), owner)
        stops[i] = why if why is not None else "lost"
    return stops
