"""The flow-control state of :class:`~qanat.storage.memory.MemoryStorage`.

The same rules as every backend (:mod:`qanat.storage.flow`) and the same parking as
SQLite and PostgreSQL (``sqlcore/flow.py``), kept in dictionaries.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from qanat.storage.base import PENDING, RUNNING, SKIPPED, WAITING, ExecutionRecord
from qanat.storage.flow import Block, FlowSpec, Gate, blocked, room, started, window_opens_at

if TYPE_CHECKING:
    from qanat.storage.memory import MemoryStorage


class MemoryFlow:
    """Gates, marks, wake-ups and step slots of one memory store."""

    def __init__(self, store: MemoryStorage) -> None:
        self.store = store
        self.gates: dict[str, Gate] = {}
        self.marks_by_gate: dict[str, list[float]] = {}
        self.wake: dict[str, float] = {}
        self.steps: dict[str, dict[str, tuple[str, float]]] = {}

    # --- FlowState ---------------------------------------------------------------------

    def gate(self, gate: str) -> Gate:
        g = self.gates.get(gate)
        return Gate(g.ref, g.n, g.first_at, g.last_at) if g is not None else Gate()

    def save_gate(self, gate: str, state: Gate) -> None:
        self.gates[gate] = state

    def marks(self, gate: str, after: float, limit: int) -> list[float]:
        found = sorted((t for t in self.marks_by_gate.get(gate, ()) if t > after), reverse=True)
        return found[:limit]

    def add_mark(self, gate: str, at: float, forget_before: float) -> None:
        kept = [t for t in self.marks_by_gate.get(gate, ()) if t > forget_before]
        kept.append(at)
        self.marks_by_gate[gate] = kept

    def running(self, gate: str) -> int:
        return sum(1 for e in self.store._execs.values() if e.slot == gate and e.status == RUNNING)

    def execution(self, execution_id: str) -> ExecutionRecord | None:
        e = self.store._execs.get(execution_id)
        return e.copy() if e is not None else None

    def drop(self, execution_id: str, reason: str, at: float) -> None:
        e = self.store._execs.get(execution_id)
        if e is not None and e.status == PENDING:
            e.status = SKIPPED
            e.reason = reason
            e.available_at = None
            e.completed_at = at
            e.gate = None

    def cancel(self, execution_id: str, reason: str) -> None:
        self.store._cancel([execution_id], reason)

    def append(self, execution_id: str, item: str, due: float | None) -> ExecutionRecord:
        e = self.store._execs[execution_id]
        assert e.flow is not None
        batch = FlowSpec.load(e.flow).batch
        assert batch is not None
        data = json.loads(e.input)
        data[batch[3]].append(json.loads(item))
        e.input = json.dumps(data, separators=(",", ":"))
        if due is not None:
            e.run_at = due
            if e.available_at is not None:
                e.available_at = due
        return e.copy()

    # --- parking -------------------------------------------------------------------------

    def admit_claim(self, e: ExecutionRecord, at: float) -> bool:
        """True if ``e`` may be claimed now (and is counted); else it is parked."""
        assert e.flow is not None
        spec = FlowSpec.load(e.flow)
        if not spec.gated:
            return True
        block = blocked(self, e, spec, at, {})
        if block is not None:
            self.park(e, block)
            return False
        started(self, e, spec, at)  # the caller marks it running: ``running`` counts it
        for gate, count, period in spec.rolling if e.started_at is None else ():
            if self._parked(gate):
                opens = window_opens_at(self.marks(gate, at - period, count), count, period, at)
                self._set_wake(gate, opens if opens is not None else at)
        return True

    def park(self, e: ExecutionRecord, block: Block) -> None:
        e.available_at = None
        e.gate = block.gate
        e.reason = block.reason
        if block.opens_at is not None:
            self._set_wake(block.gate, block.opens_at)

    def _set_wake(self, gate: str, at: float) -> None:
        if gate not in self.wake or self.wake[gate] > at:
            self.wake[gate] = at

    def _parked(self, gate: str) -> list[ExecutionRecord]:
        found = [
            e
            for e in self.store._execs.values()
            if e.gate == gate and e.available_at is None and e.status in (PENDING, WAITING)
        ]
        found.sort(key=lambda e: (-e.priority, e.run_at, e.id))
        return found

    def unpark(self, gate: str, n: int) -> int:
        out = self._parked(gate)[: max(0, n)]
        for e in out:
            e.available_at = e.run_at
            e.gate = None
            e.reason = None
        return len(out)

    def freed(self, slots: list[str | None]) -> None:
        for s in slots:
            if s is not None:
                self.unpark(s, 1)

    def open_due(self, at: float) -> None:
        for gate in [g for g, t in self.wake.items() if t <= at]:
            del self.wake[gate]
            self.refill_gate(gate, at)

    def refill_gate(self, gate: str, at: float) -> int:
        parked = self._parked(gate)
        if not parked or parked[0].flow is None:
            return 0
        n, opens = room(self, gate, FlowSpec.load(parked[0].flow), at)
        if opens is not None:
            self._set_wake(gate, opens)
        return self.unpark(gate, n) if n > 0 else 0

    def refill(self, at: float) -> int:
        gates = {e.gate for e in self.store._execs.values() if e.gate is not None}
        return sum(self.refill_gate(g, at) for g in gates)

    def allows_running(self, e: ExecutionRecord) -> bool:
        if e.slot is None or e.flow is None:
            return True
        spec = FlowSpec.load(e.flow)
        return spec.window is None or self.running(e.slot) < spec.window[1]

    # --- step slots ------------------------------------------------------------------------

    def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, until: float, at: float
    ) -> bool:
        held = self.steps.setdefault(name, {})
        for h in [h for h, (_, t) in held.items() if t < at]:
            del held[h]
        if holder in held:
            held[holder] = (held[holder][0], until)  # held: the lease is extended
            return True
        if len(held) >= limit:
            return False
        held[holder] = (owner, until)
        return True

    def release_step(self, name: str, holder: str) -> None:
        self.steps.get(name, {}).pop(holder, None)

    def renew_steps(self, owner: str, until: float) -> None:
        for held in self.steps.values():
            for h, (o, _) in list(held.items()):
                if o == owner:
                    held[h] = (o, until)
