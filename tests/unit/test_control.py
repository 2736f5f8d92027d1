"""Steering executions: job pause/resume, bulk actions, and the rules they share."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qanat import Queue, job
from qanat.execution import refusal
from qanat.storage.base import ExecutionRecord
from support import eventually

release = asyncio.Event()


@job
async def quick(n: int = 0) -> int:
    return n


@job
async def held(n: int = 0) -> int:
    await release.wait()
    return n


@job(retry=1)
async def broken(n: int = 0) -> int:
    raise RuntimeError(f"broken {n}")


@job
async def parent_of_quick() -> int:
    return await quick.run(n=7)


async def _now(value: Any) -> Any:
    return value


async def _done(h: Any) -> bool:
    return await h.status() == "completed"


# --- the rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "pause_requested", "refused"),
    [
        ("cancel", "running", False, None),
        ("cancel", "completed", False, "only live executions can be cancelled"),
        ("pause", "pending", False, None),
        ("pause", "paused", False, None),
        ("pause", "failed", False, "only live executions can be paused"),
        ("resume", "paused", False, None),
        ("resume", "running", True, None),
        ("resume", "pending", False, "is pending, not paused"),
        ("retry", "cancelled", False, None),
        ("retry", "running", False, "only failed or cancelled executions can be retried"),
    ],
)
def test_refusal_names_why(action: str, status: str, pause_requested: bool, refused: str) -> None:
    rec = ExecutionRecord("e1", "j", "{}", status=status, pause_requested=pause_requested)
    got = refusal(action, rec)
    assert (got is None) == (refused is None)
    if refused is not None:
        assert got is not None and got.startswith(f"execution e1 is {status}") and refused in got


def test_refusal_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="unknown action 'stop'; actions are: cancel, pause"):
        refusal("stop", ExecutionRecord("e1", "j", "{}"))


# --- job pause / resume -----------------------------------------------------------


async def test_a_paused_job_starts_nothing_until_resumed(make_queue: Any) -> None:
    q = await make_queue(quick, held)
    assert await q.jobs.quick.pause() is True
    assert await q.jobs.quick.pause() is False
    assert await q.jobs.quick.is_paused()
    waiting = await q.jobs.quick.start(n=1)  # enqueueing still works
    other = await q.jobs.held.start()
    release.set()
    try:
        await other.result(timeout=5)  # the worker claimed since: it passed over quick
        assert await waiting.status() == "pending"
        assert (await q.stats())["paused_jobs"] == ["quick"]
        assert await q.jobs.quick.resume() is True
        assert await waiting.result(timeout=5) == 1
        assert not await q.jobs.quick.is_paused()
    finally:
        release.clear()


async def test_running_executions_of_a_paused_job_carry_on(make_queue: Any) -> None:
    q = await make_queue(held)
    h = await q.jobs.held.start(n=3)
    await eventually(lambda: _status_is(h, "running"))
    await q.jobs.held.pause()
    release.set()
    try:
        assert await h.result(timeout=5) == 3
    finally:
        release.clear()


async def _status_is(h: Any, want: str) -> bool:
    return await h.status() == want


async def test_a_child_of_a_paused_job_is_not_started_at_birth(make_queue: Any) -> None:
    q = await make_queue(quick, parent_of_quick)
    await q.jobs.quick.pause()
    p = await q.jobs.parent_of_quick.start()

    async def child_pending() -> bool:
        kids = [e async for e in q.executions.list(job="quick", parent_id=p.id)]
        return bool(kids) and await kids[0].status() == "pending"

    await eventually(child_pending)
    assert await p.status() == "waiting"
    await q.jobs.quick.resume()
    assert await p.result(timeout=5) == 7


async def test_a_job_must_be_on_a_queue_to_pause() -> None:
    @job
    async def loose() -> None:
        return None

    with pytest.raises(Exception, match="'loose' is not registered on a queue"):
        await loose.pause()


# --- bulk actions ----------------------------------------------------------------


async def test_bulk_cancel_a_group_pages_through_and_counts(make_queue: Any) -> None:
    q = await make_queue(quick, worker=False)
    run42 = [await q.jobs.quick.start(n=i, group="run-42") for i in range(5)]
    other = await q.jobs.quick.start(n=9, group="run-43")
    assert await q.executions.cancel(group="run-42", page_size=2, reason="stop it") == 5
    assert {await h.status() for h in run42} == {"cancelled"}
    assert (await run42[0].record()).reason == "stop it"
    assert await other.status() == "pending"
    assert await q.executions.cancel(group="run-42") == 0  # nothing live is left


async def test_bulk_pause_and_resume_a_group(make_queue: Any) -> None:
    q = await make_queue(quick, worker=False)
    hs = [await q.jobs.quick.start(n=i, group="g") for i in range(3)]
    await q.jobs.quick.start(n=9)
    assert await q.executions.pause(group="g", page_size=1) == 3
    assert await q.executions.pause(group="g") == 0  # already paused: nothing changes
    assert {await h.status() for h in hs} == {"paused"}
    assert await q.executions.resume(group="g") == 3
    assert {await h.status() for h in hs} == {"pending"}
    assert await q.executions.resume(job="quick") == 0


async def test_bulk_retry_failed_ones_from_the_start(make_queue: Any) -> None:
    q = await make_queue(broken, quick)
    hs = [await q.jobs.broken.start(n=i) for i in range(3)]
    ok = await q.jobs.quick.start(n=1)
    for h in hs:
        await h.wait(timeout=5)
    await ok.wait(timeout=5)
    assert await q.executions.retry(job="broken", status="pending") == 0  # not retryable
    assert await q.executions.retry(job="quick") == 0  # completed: not retried
    first = {h.id: (await h.record()).completed_at for h in hs}
    assert await q.executions.retry(status=["failed", "cancelled"], page_size=2) == 3

    async def failed_again() -> bool:
        recs = [await h.record() for h in hs]
        return all(r.status == "failed" and r.completed_at != first[r.id] for r in recs)

    await eventually(failed_again)
    claims = [(await h.record()).claims for h in hs]
    assert claims == [1, 1, 1]  # from the start: the claim count was reset


async def test_bulk_actions_refuse_bad_filters(make_queue: Any) -> None:
    q = await make_queue(quick, worker=False)
    with pytest.raises(TypeError, match="unknown execution filter 'jobs'"):
        await q.executions.cancel(jobs="quick")
    with pytest.raises(ValueError, match="unknown status 'done'"):
        await q.executions.retry(status="done")
    with pytest.raises(ValueError, match="page_size must be an int >= 1, got 0"):
        await q.executions.pause(page_size=0)


async def test_bulk_time_filters(make_queue: Any) -> None:
    q = await make_queue(broken)
    h = await q.jobs.broken.start()
    await h.wait(timeout=5)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await q.executions.retry(completed_after=later) == 0
    assert await q.executions.retry(completed_before=later) == 1


# --- SQLite and the blocking facade ----------------------------------------------


def test_sync_facade_pauses_jobs_and_bulk_cancels(tmp_path: Path) -> None:
    q = Queue(jobs=[quick], storage=f"sqlite:///{tmp_path / 'q.db'}")
    s = q.sync
    try:
        assert s.jobs.quick.pause() is True
        assert s.jobs.quick.is_paused() is True
        for i in range(3):
            s.jobs.quick.start(n=i, group="g")
        assert s.executions.cancel(group="g", page_size=2) == 3
        assert s.jobs.quick.resume() is True
        assert s.paused_jobs() == set()
    finally:
        s.close()


async def test_a_pause_from_another_queue_on_the_file_holds_for_its_worker(
    make_queue: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    # each queue gets its own Job objects (a Job calls through the queue it was added to)
    worker_side = await make_queue(*_twins(), storage=url)
    client = await make_queue(*_twins(), storage=url, worker=False)
    assert await client.jobs.quick.pause()
    await eventually(lambda: _now("quick" in (worker_side.worker.paused_jobs or set())))
    waiting = await worker_side.jobs.quick.start(n=1)  # next to the worker: not adopted
    release.set()
    try:
        assert await (await worker_side.jobs.held.start()).result(timeout=5) == 0
        assert await waiting.status() == "pending"
        assert await client.jobs.quick.resume()
        assert await waiting.result(timeout=5) == 1
    finally:
        release.clear()


def _twins() -> list[Any]:
    """New Job objects named and running like ``quick`` and ``held``."""
    return [job("quick")(quick.handler), job("held")(held.handler)]
