"""Stopping a queue at step boundaries (SPEC §10 "Stopping"), on a real SQLite file.

A queue's worker is stopped while an execution is inside it; a second queue on the
same file then picks the released execution up, as the next worker of a deploy would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import qanat
from qanat import Job, Queue, RetryAfter, Step, job, run, sleep
from qanat.engine.threads import DaemonThreadPool
from support import eventually


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'q.db'}"


async def _started(job_: Job[Any], storage: str, **kw: Any) -> Queue:
    q = Queue(jobs=[job_], storage=storage)
    await q.start(**kw)
    return q


async def _record(storage: str, job_: Job[Any], eid: str) -> Any:
    q = Queue(jobs=[job_], storage=storage)
    await q.start(worker=False)
    try:
        return await q.storage.get(eid)
    finally:
        await q.stop()


async def _finish_elsewhere(job_: Job[Any], storage: str, eid: str, timeout: float = 10) -> Any:
    """Run the execution to its end in a second queue on the same file; its output."""
    q = await _started(job_, storage)
    try:
        h = await q.executions.get(eid)
        assert h is not None
        return await h.result(timeout=timeout)
    finally:
        await q.stop(grace=1)


@pytest.mark.timeout(30)
async def test_five_steps_are_released_at_the_next_boundary_and_resume_elsewhere(
    tmp_path: Path,
) -> None:
    runs: Counter[str] = Counter()
    in_step2 = asyncio.Event()
    finish_step2 = asyncio.Event()

    async def step(i: int) -> int:
        runs[f"s{i}"] += 1
        if i == 2 and runs["s2"] == 1:
            in_step2.set()
            await finish_step2.wait()
        return i

    @job
    async def five(n: int) -> int:
        total = n
        for i in range(1, 6):
            total += await run(f"s{i}", step, i)
            await sleep(0.05)  # short: held in memory
        return total

    storage = _db(tmp_path)
    q = await _started(five, storage)
    h = await q.jobs.five.start(n=100)
    await asyncio.wait_for(in_step2.wait(), 10)
    stopping = asyncio.create_task(q.stop(grace=10))
    await eventually(lambda: asyncio.sleep(0, q.worker is None or q.worker.stopping))
    finish_step2.set()  # step 2 finishes after the stop began; step 3 must not start
    began = time.monotonic()
    await stopping
    assert time.monotonic() - began < 2, "the stop waited for more than the step in flight"

    rec = await _record(storage, five, h.id)
    assert rec.status == "pending" and rec.owner is None and rec.completed_at is None
    assert dict(runs) == {"s1": 1, "s2": 1}

    assert await _finish_elsewhere(five, storage, h.id) == 115
    assert dict(runs) == {f"s{i}": 1 for i in range(1, 6)}, "a completed step ran again"


@pytest.mark.timeout(30)
async def test_execution_in_a_hot_sleep_is_released_at_once_and_wakes_on_time(
    tmp_path: Path,
) -> None:
    marks: dict[str, float] = {}

    def mark(name: str) -> float:
        marks[name] = time.time()
        return marks[name]

    @job
    async def napper() -> str:
        await run("before", mark, "before")
        await sleep(2)  # under hot_sleep (5 s): held in memory
        await run("after", mark, "after")
        return "awake"

    storage = _db(tmp_path)
    q = await _started(napper, storage)
    h = await q.jobs.napper.start()

    async def sleeping() -> bool:
        return "before" in marks and await h.status() == "waiting"

    await eventually(sleeping)
    began = time.monotonic()
    await q.stop(grace=10)
    assert time.monotonic() - began < 1, "the stop waited for the sleep"
    rec = await _record(storage, napper, h.id)
    assert rec.status == "pending" and rec.owner is None
    assert "after" not in marks

    assert await _finish_elsewhere(napper, storage, h.id) == "awake"
    late = marks["after"] - (marks["before"] + 2)
    assert 0 <= late < 1.0, f"woke {late:+.3f}s from the recorded wake-up time"


@pytest.mark.timeout(30)
async def test_execution_awaiting_a_child_is_released_at_once(tmp_path: Path) -> None:
    gate = asyncio.Event()

    @job(retry=1000)
    async def child() -> str:
        if not gate.is_set():  # not in memory between tries: only the parent is held
            raise RetryAfter(0.05)
        return "child"

    @job
    async def parent() -> str:
        return "parent of " + await child.run()

    storage = _db(tmp_path)
    q = Queue(jobs=[parent, child], storage=storage)
    await q.start()
    h = await q.jobs.parent.start()
    await eventually(lambda: _status_is(h, "waiting"))
    began = time.monotonic()
    await q.stop(grace=10)
    assert time.monotonic() - began < 2, "the stop waited for the child"
    rec = await _record(storage, parent, h.id)
    assert rec.status == "pending" and rec.owner is None
    gate.set()

    q2 = Queue(jobs=[parent, child], storage=storage)
    await q2.start()
    try:
        h2 = await q2.executions.get(h.id)
        assert h2 is not None
        assert await h2.result(timeout=10) == "parent of child"
    finally:
        await q2.stop(grace=1)


async def _status_is(h: Any, status: str) -> bool:
    return bool(await h.status() == status)


@pytest.mark.timeout(30)
async def test_grace_expiry_interrupts_a_long_step_which_runs_again_elsewhere(
    tmp_path: Path,
) -> None:
    runs: list[str] = []

    async def long_step() -> str:
        runs.append("start")
        if len(runs) == 1:
            await asyncio.sleep(60)
        return "done"

    @job
    async def slow() -> str:
        return await run("long", long_step)

    storage = _db(tmp_path)
    q = await _started(slow, storage)
    h = await q.jobs.slow.start()
    await eventually(lambda: asyncio.sleep(0, bool(runs)))
    began = time.monotonic()
    await q.stop(grace=0.3)
    took = time.monotonic() - began
    assert 0.3 <= took < 1.3, took
    rec = await _record(storage, slow, h.id)
    assert rec.status == "pending" and rec.owner is None

    assert await _finish_elsewhere(slow, storage, h.id) == "done"
    assert runs == ["start", "start"]


@pytest.mark.timeout(30)
async def test_grace_expiry_releases_a_plain_step_blocked_in_its_thread(tmp_path: Path) -> None:
    release = threading.Event()
    runs: list[str] = []

    def blocking_step() -> str:
        runs.append(threading.current_thread().name)
        if len(runs) == 1:
            release.wait(30)
        return "done"

    @job
    async def blocked() -> str:
        return await run("block", blocking_step)

    storage = _db(tmp_path)
    q = await _started(blocked, storage)
    h = await q.jobs.blocked.start()
    await eventually(lambda: asyncio.sleep(0, bool(runs)))
    began = time.monotonic()
    try:
        await q.stop(grace=0.3)
        assert time.monotonic() - began < 1.3
        stuck = [t for t in threading.enumerate() if t.name == runs[0]]
        assert stuck and stuck[0].daemon, "a blocked step thread would hold the exit"
        rec = await _record(storage, blocked, h.id)
        assert rec.status == "pending" and rec.owner is None
    finally:
        release.set()
    assert await _finish_elsewhere(blocked, storage, h.id) == "done"
    assert len(runs) == 2


@pytest.mark.timeout(30)
async def test_a_pause_requested_during_a_hot_sleep_holds_across_the_stop(
    tmp_path: Path,
) -> None:
    @job
    async def napper() -> str:
        await sleep(2)
        return "awake"

    storage = _db(tmp_path)
    # a pause made in this process reaches the worker through the heartbeat (lease / 3)
    q = Queue(jobs=[napper], storage=storage, lease=0.3)
    await q.start()
    h = await q.jobs.napper.start()
    await eventually(lambda: _status_is(h, "waiting"))
    assert await h.pause() == "waiting"
    worker = q.worker
    assert worker is not None
    await eventually(lambda: asyncio.sleep(0, worker.active[h.id].pause_requested))
    await q.stop(grace=10)
    rec = await _record(storage, napper, h.id)
    assert rec.status == "paused" and rec.owner is None


def test_daemon_thread_pool_runs_reuses_and_refuses_after_shutdown() -> None:
    pool = DaemonThreadPool(2, "t")
    assert [pool.submit(pow, 2, i).result(5) for i in range(5)] == [1, 2, 4, 8, 16]
    assert pool.submit(threading.current_thread).result(5).daemon
    boom = pool.submit(int, "x")
    with pytest.raises(ValueError):
        boom.result(5)
    gate = threading.Event()
    busy = [pool.submit(gate.wait, 5) for _ in range(2)]
    end = time.monotonic() + 5  # both threads have taken their task before the shutdown
    while not all(f.running() for f in busy) and time.monotonic() < end:
        time.sleep(0.001)
    queued = pool.submit(pow, 3, 2)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 1, 1)
    gate.set()
    assert all(f.result(5) for f in busy)
    pool.shutdown(wait=True)
    assert len(pool._threads) == 2 and not any(t.is_alive() for t in pool._threads)
    with pytest.raises(ValueError, match="max_workers"):
        DaemonThreadPool(0, "t")


@pytest.mark.timeout(30)
async def test_a_step_waiting_out_its_retry_backoff_is_released_at_once(tmp_path: Path) -> None:
    tries: list[float] = []

    def flaky() -> str:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return "ok"

    @job
    async def retrying() -> str:
        return await run(Step("flaky", retry=3, backoff=20), flaky)

    storage = _db(tmp_path)
    q = await _started(retrying, storage)
    h = await q.jobs.retrying.start()
    await eventually(lambda: asyncio.sleep(0, len(tries) == 1))
    began = time.monotonic()
    await q.stop(grace=10)
    assert time.monotonic() - began < 2, "the stop waited out the step's 20 s backoff"
    rec = await _record(storage, retrying, h.id)
    assert rec.status == "pending" and rec.owner is None
    assert await _finish_elsewhere(retrying, storage, h.id) == "ok"
    assert len(tries) == 2  # the step starts afresh elsewhere: its failed try was not stored


@pytest.mark.timeout(30)
async def test_grace_expiry_cancels_an_async_step_of_a_plain_handler(tmp_path: Path) -> None:
    inside = threading.Event()
    ended: list[str] = []

    async def long_step() -> str:
        inside.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        ended.append("finished")
        return "late"

    @job
    def plain() -> str:
        return str(qanat.sync.run("long", long_step))

    storage = _db(tmp_path)
    q = await _started(plain, storage)
    h = await q.jobs.plain.start()
    await eventually(lambda: asyncio.sleep(0, inside.is_set()))
    began = time.monotonic()
    await q.stop(grace=0.3)
    assert time.monotonic() - began < 3
    assert ended == ["cancelled"], "the step kept running on the loop after the stop"
    rec = await _record(storage, plain, h.id)
    assert rec.status == "pending" and rec.owner is None
