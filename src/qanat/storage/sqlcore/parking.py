"""Parking: due executions that a flow-control gate does not let start yet.

A parked execution is taken out of the claim index (``available_at = NULL``, ``gate``
set, ``reason`` says why) so that a claim never scans work stuck behind a saturated
key. It is put back (``freed``) when a slot of its window gate frees (finish, suspend,
cancel… of a running execution holding one), or when its rolling window opens (the
gate's ``wake_at``, checked by every claim; see ``flow.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from qanat.storage.flow import Block
from qanat.storage.sqlcore.dialect import Conn

PARK = "UPDATE executions SET available_at = NULL, gate = ?, reason = ? WHERE id = ?"
PARKED = "gate = ?1 AND available_at IS NULL AND status IN ('pending', 'waiting')"
UNPARK = (
    "UPDATE executions SET available_at = run_at, gate = NULL, reason = NULL WHERE id IN ("
    f"SELECT id FROM executions INDEXED BY executions_parked WHERE {PARKED} "
    "ORDER BY priority DESC, run_at, id LIMIT ?2)"
)
SET_WAKE = (
    "INSERT INTO gates (id, wake_at) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET "
    "wake_at = CASE WHEN gates.wake_at IS NULL OR gates.wake_at > ?2 THEN ?2 "
    "ELSE gates.wake_at END"
)


def park(conn: Conn, ident: str, block: Block) -> None:
    """Park one execution behind ``block.gate`` (and wake the gate when it opens)."""
    conn.execute(PARK, (block.gate, block.reason, ident))
    if block.opens_at is not None:
        conn.execute(SET_WAKE, (block.gate, block.opens_at))


def freed(slots: Iterable[str | None], conn: Conn) -> None:
    """Slots of these window gates were given up: let as many parked executions go."""
    counts: dict[str, int] = {}
    for s in slots:
        if s is not None:
            counts[s] = counts.get(s, 0) + 1
    if counts:
        conn.dialect.lock_flow(conn, counts)
    for gate, n in counts.items():
        conn.execute(UNPARK, (gate, n))
