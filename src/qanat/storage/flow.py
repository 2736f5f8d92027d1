"""Flow-control rules, decided inside storage transactions.

A job's flow-control options are turned into a :class:`FlowSpec` when an execution is
enqueued (key functions and option functions run then) and stored with it as JSON.
Every backend applies the spec the same way, through the functions below, on its own
state (the :class:`FlowState` protocol):

* at **enqueue** (:func:`admit`): rate limit, throttle ``discard``, singleton, debounce
  and batch decide whether a trigger is stored, dropped (``skipped`` with a reason),
  replaces an earlier one, or joins an open batch;
* at **claim** (:func:`blocked`): concurrency ``window`` (running executions per key)
  and ``rolling`` (starts per window per key, also what throttle ``queue`` is) decide
  whether a due execution may start now; one that may not is *parked* by the backend
  until a slot frees or the window opens.

A *gate* is one limit of one job for one key: ``[job, rule, key]`` as JSON text.
Times are seconds since the epoch; every function takes the time it decides at, so the
rules can be tested with any clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qanat.storage.base import LIVE_STATUSES, PENDING, RUNNING, SKIPPED, ExecutionRecord

#: Reasons stored with dropped or delayed executions.
RATE_LIMITED = "rate_limited"
THROTTLED = "throttled"
DEBOUNCED = "debounced"
SINGLETON = "singleton"
WAITING_FOR_SLOT = "concurrency"
WAITING_FOR_WINDOW = "rolling"
WAITING_FOR_TURN = "throttle"


def gate_id(job: str, rule: str, key: str | None) -> str:
    """The gate of ``rule`` for ``job`` and ``key`` (None: one gate for the whole job)."""
    return json.dumps([job, rule, key])


def gate_rule(gate: str) -> str:
    """The rule a gate id belongs to."""
    rule: str = json.loads(gate)[1]
    return rule


@dataclass(slots=True)
class FlowSpec:
    """The flow-control rules of one execution, with their keys already computed."""

    #: (gate, limit): at most ``limit`` running at once.
    window: tuple[str, int] | None = None
    #: (gate, count, period): at most ``count`` first starts in any ``period`` seconds.
    rolling: list[tuple[str, int, float]] = field(default_factory=list)
    #: (gate, count, period): at most ``count`` accepted triggers per ``period``.
    rate: tuple[str, int, float] | None = None
    #: (gate, gap): a trigger less than ``gap`` after the last accepted one is dropped.
    discard: tuple[str, float] | None = None
    #: (gate, delay, leading, timeout).
    debounce: tuple[str, float, bool, float | None] | None = None
    #: (gate, cancel): at most one live execution per gate.
    singleton: tuple[str, bool] | None = None
    #: (gate, max_size, timeout, field): triggers collect into one execution's list.
    batch: tuple[str, int, float, str] | None = None

    def dump(self) -> str:
        d: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value:
                d[name] = value
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> FlowSpec:
        d = json.loads(text)
        spec = cls()
        if "window" in d:
            spec.window = (d["window"][0], int(d["window"][1]))
        spec.rolling = [(g, int(c), float(p)) for g, c, p in d.get("rolling", ())]
        if "rate" in d:
            g, c, p = d["rate"]
            spec.rate = (g, int(c), float(p))
        if "discard" in d:
            spec.discard = (d["discard"][0], float(d["discard"][1]))
        if "debounce" in d:
            g, delay, leading, timeout = d["debounce"]
            spec.debounce = (g, float(delay), bool(leading), timeout)
        if "singleton" in d:
            spec.singleton = (d["singleton"][0], bool(d["singleton"][1]))
        if "batch" in d:
            g, size, timeout, fld = d["batch"]
            spec.batch = (g, int(size), float(timeout), fld)
        return spec

    def gates(self) -> list[str]:
        """Every gate these rules read or write (sorted: the order locks are taken in)."""
        found = {g for g, *_ in self.rolling}
        for rule in (self.window, self.rate, self.discard, self.debounce, self.singleton):
            if rule is not None:
                found.add(rule[0])
        if self.batch is not None:
            found.add(self.batch[0])
        return sorted(found)

    @property
    def gated(self) -> bool:
        """Whether a claim must check this execution's gates."""
        return self.window is not None or bool(self.rolling)


@dataclass(slots=True)
class Gate:
    """The stored state of one gate (fields used differently by each rule)."""

    ref: str | None = None  # singleton: the live execution; debounce: the trailing one;
    #                         batch: the open batch
    n: int = 0  # batch: items collected
    first_at: float | None = None  # debounce: when the current burst began
    last_at: float | None = None  # debounce: last trigger; throttle discard: last accepted


class FlowState(Protocol):
    """What a backend gives the rules: its gates, marks and executions, in a transaction."""

    def gate(self, gate: str) -> Gate: ...

    def save_gate(self, gate: str, state: Gate) -> None: ...

    def marks(self, gate: str, after: float, limit: int) -> list[float]:
        """Up to ``limit`` mark times of ``gate`` later than ``after``, newest first."""
        ...

    def add_mark(self, gate: str, at: float, forget_before: float) -> None:
        """Record a mark at ``at``; marks at or before ``forget_before`` may be dropped."""
        ...

    def running(self, gate: str) -> int:
        """How many executions holding a slot of window ``gate`` are running."""
        ...

    def execution(self, execution_id: str) -> ExecutionRecord | None: ...

    def drop(self, execution_id: str, reason: str, at: float) -> None:
        """Turn a pending execution into ``skipped`` with ``reason``."""
        ...

    def cancel(self, execution_id: str, reason: str) -> None:
        """Cancel a live execution (and its live children)."""
        ...

    def append(self, execution_id: str, item: str, due: float | None) -> ExecutionRecord:
        """Add ``item`` (JSON) to a batch execution's list; make it due at ``due`` if given."""
        ...


# --- pure decisions ---------------------------------------------------------------------


def window_opens_at(recent: Sequence[float], count: int, period: float, at: float) -> float | None:
    """None if one more start fits in the window ending at ``at``, else when it will.

    ``recent`` are earlier start times, newest first.
    """
    inside = [t for t in recent if t > at - period]
    if len(inside) < count:
        return None
    return inside[count - 1] + period


def throttle_drops(last: float | None, gap: float, at: float) -> bool:
    """Throttle ``discard``: a trigger less than ``gap`` after the last accepted one."""
    return last is not None and at < last + gap


@dataclass(slots=True)
class DebouncePlan:
    """What a debounced trigger does: when it runs, which pending one it replaces."""

    due: float
    replaces: str | None
    state: Gate


def debounce_plan(
    state: Gate,
    burst_open: bool,
    delay: float,
    leading: bool,
    timeout: float | None,
    at: float,
    new_id: str,
) -> DebouncePlan:
    """Decide a debounced trigger at ``at``.

    ``burst_open``: the trailing execution ``state.ref`` has not started yet, so the new
    trigger replaces it. ``trailing``: it runs ``delay`` after the last trigger (but no
    later than ``timeout`` after the first of the burst). ``leading``: a trigger outside
    the window of the last one runs at once; those inside it trail as above.
    """
    in_window = state.last_at is not None and at < state.last_at + delay
    if leading and not burst_open and not in_window:
        return DebouncePlan(at, None, Gate(ref=None, first_at=at, last_at=at))
    first = state.first_at if (burst_open or (leading and in_window)) else at
    if first is None:
        first = at
    due = at + delay
    if timeout is not None:
        due = max(at, min(due, first + timeout))
    replaces = state.ref if burst_open else None
    return DebouncePlan(due, replaces, Gate(ref=new_id, first_at=first, last_at=at))


# --- rules applied on a backend's state ------------------------------------------------


def admit(fs: FlowState, rec: ExecutionRecord, spec: FlowSpec) -> ExecutionRecord | None:
    """Apply the enqueue-time rules to ``rec`` (not stored yet), at ``rec.created_at``.

    ``rec`` may be changed in place (dropped as ``skipped``, delayed, given its slot).
    Returns None to store ``rec``, or an existing execution that takes the trigger in
    its place (an open batch).
    """
    at = rec.created_at
    if spec.window is not None:
        rec.slot = spec.window[0]
    if rec.status != PENDING:  # stored already claimed or finished: nothing to decide
        return None
    why = _drop_reason(fs, rec, spec, at)
    if why is not None:
        rec.status = SKIPPED
        rec.reason = why
        rec.available_at = None
        rec.completed_at = at
        rec.slot = None
        return None
    if spec.rate is not None:
        gate, _count, period = spec.rate
        fs.add_mark(gate, at, at - period)
    if spec.discard is not None:
        gate, _ = spec.discard
        g = fs.gate(gate)
        g.last_at = at
        fs.save_gate(gate, g)
    if spec.singleton is not None:
        gate, cancel = spec.singleton
        g = fs.gate(gate)
        if cancel and g.ref is not None and _live(fs.execution(g.ref)):
            fs.cancel(g.ref, f"{SINGLETON}: replaced by {rec.id}")
        g.ref = rec.id
        fs.save_gate(gate, g)
    if spec.debounce is not None:
        gate, delay, leading, timeout = spec.debounce
        g = fs.gate(gate)
        pending = fs.execution(g.ref) if g.ref is not None else None
        burst_open = pending is not None and pending.status == PENDING and pending.claims == 0
        plan = debounce_plan(g, burst_open, delay, leading, timeout, at, rec.id)
        if plan.replaces is not None:
            fs.drop(plan.replaces, f"{DEBOUNCED}: replaced by {rec.id}", at)
        due = max(plan.due, rec.run_at)
        rec.run_at = rec.available_at = due
        fs.save_gate(gate, plan.state)
    if spec.batch is not None:
        return _join_batch(fs, rec, spec.batch, at)
    return None


def _drop_reason(fs: FlowState, rec: ExecutionRecord, spec: FlowSpec, at: float) -> str | None:
    if spec.singleton is not None and not spec.singleton[1]:
        ref = fs.gate(spec.singleton[0]).ref
        if ref is not None and _live(fs.execution(ref)):
            return f"{SINGLETON}: {ref} is live"
    if spec.discard is not None:
        gate, gap = spec.discard
        if throttle_drops(fs.gate(gate).last_at, gap, at):
            return THROTTLED
    if spec.rate is not None:
        gate, count, period = spec.rate
        if window_opens_at(fs.marks(gate, at - period, count), count, period, at) is not None:
            return RATE_LIMITED
    return None


def _live(rec: ExecutionRecord | None) -> bool:
    return rec is not None and rec.status in LIVE_STATUSES


def _join_batch(
    fs: FlowState, rec: ExecutionRecord, batch: tuple[str, int, float, str], at: float
) -> ExecutionRecord | None:
    gate, size, timeout, fld = batch
    g = fs.gate(gate)
    open_rec = fs.execution(g.ref) if g.ref is not None else None
    if open_rec is not None and open_rec.status == PENDING and open_rec.claims == 0 and g.n < size:
        item = json.dumps(json.loads(rec.input)[fld][0], separators=(",", ":"))
        g.n += 1
        joined = fs.append(open_rec.id, item, at if g.n >= size else None)
        fs.save_gate(gate, g)
        return joined
    due = rec.run_at if size <= 1 else max(rec.run_at, at + timeout)
    rec.run_at = rec.available_at = due
    fs.save_gate(gate, Gate(ref=rec.id, n=1))
    return None


@dataclass(slots=True)
class Block:
    """Why a due execution may not start now: the gate it waits behind, the time that
    gate opens (None: when a slot frees), and the reason shown while it waits."""

    gate: str
    opens_at: float | None
    reason: str


def blocked(
    fs: FlowState,
    rec: ExecutionRecord,
    spec: FlowSpec,
    at: float,
    taking: dict[str, int],
) -> Block | None:
    """Whether ``rec`` must wait instead of being claimed at ``at``.

    ``taking`` counts executions per window gate already taken earlier in the same claim
    (not yet counted by ``fs.running``). A running execution whose lease lapsed keeps its
    slot; only an execution's first start counts against rolling windows.
    """
    if spec.window is not None and rec.status != RUNNING:
        gate, limit = spec.window
        if fs.running(gate) + taking.get(gate, 0) >= limit:
            return Block(gate, None, WAITING_FOR_SLOT)
    if rec.started_at is None:
        for gate, count, period in spec.rolling:
            opens = window_opens_at(fs.marks(gate, at - period, count), count, period, at)
            if opens is not None:
                why = WAITING_FOR_TURN if gate_rule(gate) == "throttle" else WAITING_FOR_WINDOW
                return Block(gate, opens, why)
    return None


def room(fs: FlowState, gate: str, spec: FlowSpec, at: float) -> tuple[int, float | None]:
    """How many executions parked behind ``gate`` (whose rules are ``spec``) may start at
    ``at``; with none, for a rolling gate, also when it opens."""
    if gate_rule(gate) == "window" and spec.window is not None:
        return spec.window[1] - fs.running(gate), None
    for g, count, period in spec.rolling:
        if g == gate:
            inside = fs.marks(gate, at - period, count)
            if len(inside) < count:
                return count - len(inside), None
            opens = window_opens_at(inside, count, period, at)
            return 0, opens if opens is not None else at
    return 0, None


def started(fs: FlowState, rec: ExecutionRecord, spec: FlowSpec, at: float) -> None:
    """Record a claim of ``rec`` at ``at`` against its rolling windows (first start only)."""
    if rec.started_at is None:
        for gate, _count, period in spec.rolling:
            fs.add_mark(gate, at, at - period)
