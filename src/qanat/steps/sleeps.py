"""Durable sleeps: the wake-up time is checkpointed, so a restart still wakes on time."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from qanat import codec
from qanat.durations import parse_duration
from qanat.durations import to_timestamp as _to_ts
from qanat.errors import Suspend
from qanat.steps.state import ExecState, blocked, current
from qanat.storage.base import COMPLETED, WAITING, StepRecord


async def sleep(duration: float | str | timedelta) -> None:
    """Sleep durably: the wake-up time is checkpointed, so a restart still wakes on time."""
    seconds = parse_duration(duration)
    await _sleep(current("sleep"), "sleep", seconds, None)


async def sleep_until(when: datetime) -> None:
    """Sleep durably until a timezone-aware datetime."""
    await _sleep(current("sleep_until"), "sleep", None, _to_ts(when))


async def _sleep(st: ExecState, name: str, seconds: float | None, until: float | None) -> None:
    """Sleep ``seconds`` from the storage's now, or until ``until``."""
    storage = st.worker.storage
    st.boundary()
    key = st.next_key(name)
    rec = st.recorded(key, "sleep", name)
    if rec is not None and rec.result is not None:
        wake = float(codec.loads(rec.result))
    else:
        # the wake time is written and compared by whichever host resumes it: it is
        # the storage's clock (``Storage.now``), not this host's
        at = await storage.now()
        wake = until if until is not None else at + (seconds or 0.0)
        await st.checkpoint(
            StepRecord(
                st.id, key, "sleep", name, COMPLETED, codec.dumps(wake), None, 1, st.attempt, at, at
            )
        )
    remaining = wake - storage.clock()  # a local timer: the estimate is enough
    if remaining <= 0:
        return
    if remaining > st.worker.hot_sleep:
        st.suspend_status = WAITING
        st.suspend_until = wake
        raise Suspend("sleep")
    async with blocked(st):
        await asyncio.sleep(remaining)
    st.boundary()
