"""Poison pills on memory storage: an execution whose workers keep dying fails with
``WorkerLost`` once ``max_recoveries`` claims took it from workers that never let it go.

The dead workers are played here by direct storage claims (owner ``ghost-N``, a lease
that has lapsed at once); the real-process version is tests/acceptance/test_poison.py.
"""

from __future__ import annotations

from typing import Any

import pytest

import qanat
from qanat import job, run
from qanat.storage import Checkpoint, MemoryStorage, StepRecord
from qanat.storage.base import now


def _jobs(ran: list[str]) -> Any:
    def boom() -> str:
        ran.append("boom")
        return "survived"

    @job
    async def pill() -> str:
        await run("setup", lambda: "ready")
        return str(await run("boom", boom))

    return pill


async def _ghost_claims(store: MemoryStorage, n: int, step_in_flight: str | None) -> str:
    """``n`` workers claim the one execution and vanish; the first checkpoints ``setup``,
    the later (recovered) ones record ``step_in_flight`` before dying."""
    ident = ""
    for i in range(n):
        [rec] = await store.claim(f"ghost-{i}", ["pill"], 1, 0.0, now())
        ident = rec.id
        if i == 0:
            at = now()
            done = StepRecord(rec.id, "setup", "run", "setup", "completed", '"ready"', None)
            done.started_at = done.finished_at = at
            assert await store.checkpoint(rec.id, f"ghost-{i}", Checkpoint(done)) is None
        elif step_in_flight is not None:
            assert await store.enter_step(rec.id, f"ghost-{i}", step_in_flight)
    return ident


async def test_third_recovery_fails_with_worker_lost_naming_the_step(make_queue: Any) -> None:
    ran: list[str] = []
    pill = _jobs(ran)
    store = MemoryStorage()
    client = await make_queue(pill, storage=store, worker=False)
    h = await client.jobs.pill.start()
    await _ghost_claims(store, 3, "boom")  # 3 claims: the last 2 took it from dead owners
    await make_queue(pill, storage=store, max_recoveries=3)  # its claim is the 3rd recovery
    with pytest.raises(qanat.WorkerLost) as err:
        await h.result(timeout=5)
    message = str(err.value)
    assert "3 workers died" in message and "in step 'boom'" in message, message
    assert "max_recoveries=3" in message
    assert ran == []  # the poison was not run again
    rec = await store.get(h.id)
    assert rec is not None and (rec.status, rec.attempt, rec.recoveries) == ("failed", 1, 3)


async def test_without_a_recorded_step_the_error_names_the_last_checkpoint(
    make_queue: Any,
) -> None:
    pill = _jobs([])
    store = MemoryStorage()
    client = await make_queue(pill, storage=store, worker=False)
    h = await client.jobs.pill.start()
    await _ghost_claims(store, 2, None)
    await make_queue(pill, storage=store, max_recoveries=2)
    with pytest.raises(qanat.WorkerLost, match=r"2 workers died .* after step 'setup'"):
        await h.result(timeout=5)


async def test_below_the_limit_a_recovered_execution_runs_and_its_checkpoint_resets_it(
    make_queue: Any,
) -> None:
    ran: list[str] = []
    pill = _jobs(ran)
    store = MemoryStorage()
    client = await make_queue(pill, storage=store, worker=False)
    h = await client.jobs.pill.start()
    await _ghost_claims(store, 3, None)  # 2 recoveries so far, no step recorded
    entered: list[tuple[str, str]] = []
    real_enter = store.enter_step

    async def enter_step(execution_id: str, owner: str, key: str) -> bool:
        entered.append((execution_id, key))
        return await real_enter(execution_id, owner, key)

    store.enter_step = enter_step  # type: ignore[method-assign]
    await make_queue(pill, storage=store, max_recoveries=4)  # 3rd recovery: under 4
    assert await h.result(timeout=5) == "survived"
    assert ran == ["boom"]
    assert entered == [(h.id, "boom")]  # before running it; "setup" was replayed
    rec = await store.get(h.id)
    assert rec is not None and (rec.recoveries, rec.step_in_flight) == (0, None)


async def test_a_fresh_execution_never_records_its_step_in_flight(make_queue: Any) -> None:
    pill = _jobs([])
    store = MemoryStorage()

    async def refuse(execution_id: str, owner: str, key: str) -> bool:
        raise AssertionError("enter_step is for recovered executions only")

    store.enter_step = refuse  # type: ignore[method-assign]
    q = await make_queue(pill, storage=store)
    assert await (await q.jobs.pill.start()).result(timeout=5) == "survived"
