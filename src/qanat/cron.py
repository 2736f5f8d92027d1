"""Cron schedules (``Job(cron=..., tz=...)``): parsing, ticks, and the keys of ticks.

The scheduler loop that enqueues ticks is ``qanat.engine.cron``; every worker runs it.
Each tick is enqueued with the key ``cron:<tick epoch seconds>``, and the storage's
unique ``(job, key)`` keeps exactly one execution per tick however many workers
enqueue it.

Ticks missed while no worker ran are found on start-up, from the newest tick that has
an execution, and handled per ``Job(cron_missed=...)``:

- ``"latest"`` (default): run the latest missed tick once, record the others;
- ``"all"``: run every missed tick (the newest ``MISSED_LIMIT``);
- ``"skip"``: run none, record them all.

A recorded missed tick is a ``skipped`` execution with reason ``"missed"`` and the tick's
key (the newest ``MISSED_LIMIT`` of them; a log warning counts them all).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

from qanat.errors import ConfigurationError

#: The name of the one input parameter a cron job may take.
SCHEDULED_AT = "scheduled_at"
#: ``cron_missed=`` values.
MISSED_POLICIES = ("latest", "all", "skip")
#: At most this many missed ticks are recorded (or run, with ``cron_missed="all"``).
MISSED_LIMIT = 100
#: A tick due less than this long before start-up counts as due, not missed: a live
#: worker may be about to enqueue it (it is enqueued here too; the key dedupes).
DUE_GRACE = 5.0
#: How many of a job's newest executions are read to find its last tick on start-up.
HISTORY_SCAN = 200
KEY_PREFIX = "cron:"


def tick_key(tick: float) -> str:
    """The idempotency key of the execution of a tick."""
    return f"{KEY_PREFIX}{round(tick)}"


def tick_of(key: str | None) -> float | None:
    """The tick of a cron execution's key, or None for any other key."""
    if key is None or not key.startswith(KEY_PREFIX):
        return None
    try:
        return float(key[len(KEY_PREFIX) :])
    except ValueError:
        return None


class CronSchedule:
    """One or more cron expressions in a time zone.

    Five fields (minute first) or six (seconds first, as in ``"*/10 * * * * *"``).
    """

    def __init__(self, job: str, cron: str | Sequence[str], tz: str | tzinfo | None) -> None:
        exprs = [cron] if isinstance(cron, str) else list(cron)
        if not exprs:
            raise ConfigurationError(f"job {job!r}: cron= is an empty list")
        self.tz: tzinfo = _zone(job, tz)
        self.expressions: list[str] = []
        self._croniter: list[str] = []
        probe = datetime.now(self.tz)
        for expr in exprs:
            if not isinstance(expr, str):
                raise ConfigurationError(f"job {job!r}: cron expressions are strings, got {expr!r}")
            fields = expr.split()
            if len(fields) not in (5, 6):
                raise ConfigurationError(
                    f"job {job!r}: invalid cron expression {expr!r}: expected 5 fields "
                    f"(minute hour day month weekday) or 6 (seconds first), got {len(fields)}"
                )
            # croniter's optional seconds field is the last one; ours is the first
            native = " ".join(fields[1:] + fields[:1]) if len(fields) == 6 else " ".join(fields)
            try:
                ok = croniter.is_valid(native)
                if ok:
                    croniter(native, probe).get_next(float)
            except Exception as exc:
                raise ConfigurationError(
                    f"job {job!r}: invalid cron expression {expr!r}: {exc}"
                ) from None
            if not ok:
                raise ConfigurationError(f"job {job!r}: invalid cron expression {expr!r}")
            self.expressions.append(expr)
            self._croniter.append(native)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expressions!r}, tz={self.tz!s})"

    def at(self, tick: float) -> datetime:
        """A tick as an aware datetime in the schedule's zone."""
        return datetime.fromtimestamp(tick, self.tz)

    def next_after(self, ts: float) -> float:
        """The first tick strictly after ``ts`` (epoch seconds)."""
        start = self.at(ts)
        return min(float(croniter(e, start).get_next(float)) for e in self._croniter)

    def ticks_between(self, after: float, until: float, limit: int) -> tuple[list[float], int]:
        """The newest ``limit`` ticks in ``(after, until]``, oldest first, and how many
        more there were before them (counted up to ``limit`` more, then given as is)."""
        found: set[float] = set()
        start = self.at(until + 0.001)
        for e in self._croniter:
            it = croniter(e, start)
            for _ in range(2 * limit + 1):
                t = float(it.get_prev(float))
                if t <= after:
                    break
                found.add(t)
        ticks = sorted(found)
        extra = max(0, len(ticks) - limit)
        return ticks[extra:], extra


def _zone(job: str, tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return ZoneInfo("UTC")
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise ConfigurationError(f"job {job!r}: tz= takes a zone name like 'Europe/Paris'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"job {job!r}: unknown time zone tz={tz!r}") from None


def check_cron_input(job: str, fields: Sequence[str], model: Any, hints: dict[str, Any]) -> bool:
    """Check a cron job's input is empty or one ``scheduled_at: datetime``; return whether
    it takes ``scheduled_at``. ``fields``/``hints`` describe the handler's parameters, or
    ``model`` is the ``input=`` model."""
    if model is not None:
        names = list(model.model_fields)
        hints = {n: f.annotation for n, f in model.model_fields.items()}
    else:
        names = list(fields)
    others = [n for n in names if n != SCHEDULED_AT]
    if others:
        raise ConfigurationError(
            f"job {job!r}: a cron job's input is empty or one 'scheduled_at: datetime' "
            f"parameter; it also needs {', '.join(repr(n) for n in others)}"
        )
    if SCHEDULED_AT not in names:
        return False
    ann = hints.get(SCHEDULED_AT, inspect.Parameter.empty)
    if ann is not datetime:
        raise ConfigurationError(
            f"job {job!r}: the cron parameter 'scheduled_at' must be annotated datetime, "
            f"got {ann!r}"
        )
    return True


def check_missed_policy(job: str, policy: Any) -> str:
    if policy not in MISSED_POLICIES:
        raise ConfigurationError(
            f"job {job!r}: cron_missed= is one of {', '.join(map(repr, MISSED_POLICIES))}, "
            f"got {policy!r}"
        )
    return str(policy)
