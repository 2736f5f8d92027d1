"""Flow control in SQL: gates, marks, parking at claim time, step slots.

The rules are in :mod:`qanat.storage.flow`; this module gives them the SQL state
(:class:`SqlFlowState`) and parks what they hold back (``parking.py``). Everything here
runs on the writer thread inside the transaction of the operation that calls it
(enqueue, claim, finish…). On SQLite that transaction is the only writer
(``BEGIN IMMEDIATE``); on PostgreSQL every use of a gate's state first takes that
gate's lock (``Dialect.lock_flow``: one advisory lock per gate key), so counts read
here cannot be stale by the time the decision commits, while work behind other gates
goes on. A periodic ``refill`` repairs anything a missed wake-up could leave
parked. Schema: ``sql/sqlite_005_flow.sql``, ``sql/postgres_001_initial.sql``.
"""

from __future__ import annotations

from qanat.storage.base import ExecutionRecord
from qanat.storage.flow import (
    WAITING_FOR_SLOT,
    FlowSpec,
    Gate,
    blocked,
    room,
    started,
    window_opens_at,
)
from qanat.storage.sqlcore.control import cancel_tree
from qanat.storage.sqlcore.dialect import POSTGRES, Conn
from qanat.storage.sqlcore.parking import PARKED, SET_WAKE, UNPARK, freed, park
from qanat.storage.sqlcore.records import SELECT_ONE, execution

GATE = "SELECT ref, n, first_at, last_at FROM gates WHERE id = ?"
SAVE_GATE = (
    "INSERT INTO gates (id, ref, n, first_at, last_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET ref = excluded.ref, n = excluded.n, "
    "first_at = excluded.first_at, last_at = excluded.last_at"
)
MARKS = "SELECT at FROM flow_marks WHERE gate = ? AND at > ? ORDER BY at DESC LIMIT ?"
ADD_MARK = "INSERT INTO flow_marks (gate, at) VALUES (?, ?)"
FORGET_MARKS = "DELETE FROM flow_marks WHERE gate = ? AND at <= ?"
RUNNING = (
    "SELECT count(*) FROM executions INDEXED BY executions_slots "
    "WHERE slot = ? AND status = 'running' AND slot IS NOT NULL"
)
#: Due, not running executions holding a slot of window gate ?1 with the same rules.
PARK_GATE = (
    "UPDATE executions SET available_at = NULL, gate = ?1, reason = ?2 WHERE id IN ("
    "SELECT id FROM executions INDEXED BY executions_ready WHERE available_at IS NOT NULL "
    "AND status IN ('pending', 'running', 'waiting') AND status != 'running' "
    "AND available_at <= ?3 AND slot = ?1 "
    "AND flow = ?4 LIMIT ?5)"
)
#: At most this many executions parked by one statement.
MAX_BULK_PARK = 5000
PARKED_HEAD = (
    f"SELECT flow FROM executions INDEXED BY executions_parked WHERE {PARKED} "
    "ORDER BY priority DESC, run_at, id LIMIT 1"
)
PARKED_GATES = (
    "SELECT DISTINCT gate FROM executions INDEXED BY executions_parked "
    "WHERE gate IS NOT NULL AND available_at IS NULL"
)
DUE_GATES = "SELECT id FROM gates INDEXED BY gates_wake WHERE wake_at IS NOT NULL AND wake_at <= ?"
CLEAR_WAKE = "UPDATE gates SET wake_at = NULL WHERE id = ?"
DROP_ONE = (
    "UPDATE executions SET status = 'skipped', reason = ?2, available_at = NULL, "
    "completed_at = ?3, gate = NULL WHERE id = ?1 AND status = 'pending'"
)
APPEND_ITEM = (
    "UPDATE inputs SET input = json_insert(input, '$.' || ?2 || '[#]', json(?3)) WHERE id = ?1"
)
BATCH_DUE = (
    "UPDATE executions SET run_at = COALESCE(?2, run_at), "
    "available_at = COALESCE(?2, available_at) WHERE id = ?1"
)


class SqlFlowState:
    """The :class:`~qanat.storage.flow.FlowState` of one SQL transaction."""

    def __init__(self, conn: Conn, at: float, spec: FlowSpec | None = None) -> None:
        self.conn = conn
        self.at = at
        if spec is not None:  # the rules' gates at once, in sorted order
            conn.dialect.lock_flow(conn, spec.gates())

    def _lock(self, gate: str) -> None:
        """The serialization point of the gate's shared budget (a no-op once held)."""
        self.conn.dialect.lock_flow(self.conn, (gate,))

    def gate(self, gate: str) -> Gate:
        self._lock(gate)
        row = self.conn.execute(GATE, (gate,)).fetchone()
        return Gate(*row) if row is not None else Gate()

    def save_gate(self, gate: str, state: Gate) -> None:
        self._lock(gate)
        self.conn.execute(SAVE_GATE, (gate, state.ref, state.n, state.first_at, state.last_at))

    def marks(self, gate: str, after: float, limit: int) -> list[float]:
        self._lock(gate)
        return [r[0] for r in self.conn.execute(MARKS, (gate, after, limit))]

    def add_mark(self, gate: str, at: float, forget_before: float) -> None:
        self._lock(gate)
        self.conn.execute(FORGET_MARKS, (gate, forget_before))
        self.conn.execute(ADD_MARK, (gate, at))

    def running(self, gate: str) -> int:
        self._lock(gate)
        n: int = self.conn.execute(RUNNING, (gate,)).fetchone()[0]
        return n

    def execution(self, execution_id: str) -> ExecutionRecord | None:
        row = self.conn.execute(SELECT_ONE, (execution_id,)).fetchone()
        return execution(row) if row is not None else None

    def drop(self, execution_id: str, reason: str, at: float) -> None:
        self.conn.execute(DROP_ONE, (execution_id, reason, at))

    def cancel(self, execution_id: str, reason: str) -> None:
        out = cancel_tree(self.conn, [execution_id], reason)
        freed([r.slot for r in out if r.status == "running"], self.conn)

    def append(self, execution_id: str, item: str, due: float | None) -> ExecutionRecord:
        spec = self.execution(execution_id)
        assert spec is not None and spec.flow is not None
        batch = FlowSpec.load(spec.flow).batch
        assert batch is not None
        self.conn.execute(APPEND_ITEM, (execution_id, batch[3], item))
        if due is not None:
            self.conn.execute(BATCH_DUE, (execution_id, due))
        return execution(self.conn.execute(SELECT_ONE, (execution_id,)).fetchone())


# --- claiming --------------------------------------------------------------------------


class ClaimGates:
    """The gate checks of one claim: parks what may not start, counts what it takes."""

    def __init__(self, conn: Conn, at: float) -> None:
        self.fs = SqlFlowState(conn, at)
        self.at = at
        self.taking: dict[str, int] = {}
        self._specs: dict[str, FlowSpec] = {}
        #: Window gates found full in this claim: their other due executions were parked
        #: with the first (or are skipped by the claim query until the next claim).
        self.full: set[str] = set()
        self.parked = 0

    def admit(self, ident: str, flow: str, status: str, started_at: float | None) -> bool | None:
        """True if the execution may be taken now (then it is counted); False: it was
        parked; None: another transaction holds one of its gates (pass over it)."""
        spec = self._specs.get(flow)
        if spec is None:
            spec = self._specs[flow] = FlowSpec.load(flow)
        if not spec.gated:
            return True
        if not self.fs.conn.dialect.try_lock_flow(self.fs.conn, spec.gates()):
            return None
        probe = ExecutionRecord(ident, "", "", status=status, started_at=started_at)
        block = blocked(self.fs, probe, spec, self.at, self.taking)
        if block is not None:
            park(self.fs.conn, ident, block)
            self.parked += 1
            if block.reason == WAITING_FOR_SLOT and block.gate not in self.full:
                # the slot count can't drop inside this transaction: park the gate's other
                # due executions (same rules) in one statement, and skip the gate from now
                # (this bulk is bounded by MAX_BULK_PARK, so it doesn't count to ``parked``)
                self.full.add(block.gate)
                self.fs.conn.execute(
                    PARK_GATE, (block.gate, block.reason, self.at, flow, MAX_BULK_PARK)
                )
            return False
        started(self.fs, probe, spec, self.at)
        if spec.window is not None and status != "running":
            self.taking[spec.window[0]] = self.taking.get(spec.window[0], 0) + 1
        for gate, count, period in spec.rolling if started_at is None else ():
            _schedule_if_parked(self.fs, gate, count, period, self.at)
        return True


def _schedule_if_parked(fs: SqlFlowState, gate: str, count: int, period: float, at: float) -> None:
    """After a start on a rolling gate: if work is parked behind it, wake it when the
    window next opens."""
    if fs.conn.execute(PARKED_HEAD, (gate,)).fetchone() is None:
        return
    opens = window_opens_at(fs.marks(gate, at - period, count), count, period, at)
    fs.conn.execute(SET_WAKE, (gate, opens if opens is not None else at))


def open_due_gates(conn: Conn, at: float) -> None:
    """Unpark what rolling windows that have opened by ``at`` let start."""
    for (gate,) in conn.execute(DUE_GATES, (at,)).fetchall():
        conn.execute(CLEAR_WAKE, (gate,))
        _refill(conn, gate, at)


def _refill(conn: Conn, gate: str, at: float) -> int:
    """Unpark as many executions behind ``gate`` as it lets start now."""
    conn.dialect.lock_flow(conn, (gate,))
    head = conn.execute(PARKED_HEAD, (gate,)).fetchone()
    if head is None or head[0] is None:
        return 0
    n, opens = room(SqlFlowState(conn, at), gate, FlowSpec.load(head[0]), at)
    if opens is not None:
        conn.execute(SET_WAKE, (gate, opens))
    if n <= 0:
        return 0
    unparked: int = conn.execute(UNPARK, (gate, n)).rowcount
    return unparked


def op_refill(conn: Conn, at: float | None) -> int:
    """Repair pass (housekeeping): unpark what every gate with parked work lets start."""
    gates = [r[0] for r in conn.execute(PARKED_GATES).fetchall()]
    if not gates:
        return 0
    at = conn.dialect.now(conn) if at is None else at
    return sum(_refill(conn, g, at) for g in gates)


def gate_allows_running(conn: Conn, eid: str) -> bool:
    """Whether an owned, waiting execution may take its window slot again."""
    row = conn.execute("SELECT slot, flow FROM executions WHERE id = ?", (eid,)).fetchone()
    if row is None or row[0] is None or row[1] is None:
        return True
    spec = FlowSpec.load(row[1])
    if spec.window is None:
        return True
    return SqlFlowState(conn, 0.0).running(row[0]) < spec.window[1]


# --- step-level concurrency ------------------------------------------------------------

STEP_FORGET = "DELETE FROM step_slots WHERE name = ? AND until < ?"
STEP_EXTEND = "UPDATE step_slots SET until = ? WHERE name = ? AND holder = ?"
STEP_COUNT = "SELECT count(*) FROM step_slots WHERE name = ?"
STEP_TAKE = "INSERT INTO step_slots (name, holder, owner, until) VALUES (?, ?, ?, ?)"
STEP_GIVE = "DELETE FROM step_slots WHERE name = ? AND holder = ?"
STEP_RENEW = "UPDATE step_slots SET until = ? WHERE owner = ?"


def op_acquire_step(
    conn: Conn, name: str, holder: str, owner: str, limit: int, lease: float, at: float | None
) -> bool:
    conn.dialect.lock_flow(conn, (f"step:{name}",))
    at = conn.dialect.now(conn) if at is None else at
    until = at + lease
    conn.execute(STEP_FORGET, (name, at))
    if conn.execute(STEP_EXTEND, (until, name, holder)).rowcount > 0:
        return True
    if conn.execute(STEP_COUNT, (name,)).fetchone()[0] >= limit:
        return False
    conn.execute(STEP_TAKE, (name, holder, owner, until))
    return True


def op_release_step(conn: Conn, name: str, holder: str) -> None:
    conn.execute(STEP_GIVE, (name, holder))


def renew_steps(conn: Conn, owner: str, until: float) -> None:
    conn.execute(STEP_RENEW, (until, owner))


POSTGRES.overrides[APPEND_ITEM] = (
    "UPDATE inputs SET input = CAST(jsonb_insert(CAST(input AS jsonb), "
    "ARRAY[?2, '-1'], CAST(?3 AS jsonb), true) AS text) WHERE id = ?1"
)
