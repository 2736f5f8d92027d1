"""Execution handles and queries on memory storage: control, filters, stats, retention, sync."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import qanat
from qanat import Queue, job, run
from support import eventually

gate: asyncio.Event | None = None


@job
async def blocked_child(n: int) -> int:
    await asyncio.sleep(3600)
    return n


@job
async def parent_of_two() -> list[int]:
    return list(await asyncio.gather(blocked_child.run(n=1), blocked_child.run(n=2)))


async def _status(h: qanat.Execution, want: str) -> bool:
    return await h.status() == want


async def test_cancel_cascades_to_live_children(make_queue: Any) -> None:
    cancelled: list[str] = []
    blocked_child.hooks["on_cancel"] = lambda value, reason: cancelled.append(reason)
    try:
        q = await make_queue(blocked_child, parent_of_two)
        p = await q.jobs.parent_of_two.start()

        async def two_children_running() -> bool:
            kids = [e async for e in q.executions.list(job="blocked_child", status="running")]
            return len(kids) == 2

        await eventually(two_children_running)
        assert await p.status() == "waiting"
        assert await p.cancel("user asked")
        with pytest.raises(qanat.Cancelled, match="user asked"):
            await p.result(timeout=5)
        kids = [e async for e in q.executions.list(job="blocked_child")]
        assert {await k.status() for k in kids} == {"cancelled"}
        await eventually(lambda: _async(len(cancelled) == 2))
        assert cancelled == ["user asked", "user asked"]
    finally:
        blocked_child.hooks["on_cancel"] = None


async def _async(v: Any) -> Any:
    return v


async def test_pause_at_step_boundary_and_resume(make_queue: Any) -> None:
    release = asyncio.Event()
    ran: list[int] = []

    async def step(i: int) -> None:
        ran.append(i)
        if i == 1:
            await release.wait()

    @job
    async def three() -> str:
        for i in range(1, 4):
            await run(f"s{i}", step, i)
        return "done"

    q = await make_queue(three)
    h = await q.jobs.three.start()
    await eventually(lambda: _async(ran == [1]))
    assert await h.pause() == "running"  # requested; takes effect at the next boundary
    release.set()
    await eventually(lambda: _status(h, "paused"))
    assert ran == [1]
    assert await h.resume() == "pending"
    assert await h.result(timeout=5) == "done"
    assert ran == [1, 2, 3]


async def test_pause_pending_and_retry_failed(make_queue: Any) -> None:
    attempts: list[int] = []

    @job(retry=1)
    async def once(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("first run fails")
        return n

    q = await make_queue(once, worker=False)
    h = await q.jobs.once.start(n=4)
    assert await h.pause() == "paused"
    await q.start(worker=True)
    await h.resume()
    with pytest.raises(RuntimeError, match="first run fails"):
        await h.result(timeout=5)
    assert await h.retry()
    assert await h.result(timeout=5) == 4
    assert (await h.record()).attempt == 1
    assert not await h.retry()  # completed: nothing to retry


async def test_on_progress_callback(make_queue: Any) -> None:
    go = asyncio.Event()

    @job
    async def slowly() -> None:
        qanat.progress(25, "quarter")
        await run("wait", go.wait)
        qanat.progress(100, "all")

    q = await make_queue(slowly)
    seen: list[tuple[float, str | None]] = []
    h = await q.jobs.slowly.start()
    h.on_progress(lambda p: seen.append((p.pct, p.message)))
    await eventually(lambda: _async(seen == [(25.0, "quarter")]))
    go.set()
    await h.result(timeout=5)
    await eventually(lambda: _async(seen[-1] == (100.0, "all")))


async def test_queries_filter_and_page(make_queue: Any) -> None:
    @job(retry=2, backoff=0)
    async def work(n: int) -> int:
        if n % 5 == 0:
            raise ValueError("multiple of five")
        return n

    @job
    async def other() -> None:
        return None

    q = await make_queue(work, other)
    before = datetime.now(UTC) - timedelta(seconds=1)
    hs = [await q.jobs.work.start(n=i, group="g1" if i < 10 else None) for i in range(25)]
    await q.jobs.other.run()
    for h in hs:
        await h.wait(timeout=5)

    everything = [e async for e in q.executions.list(page_size=7)]
    assert len(everything) == 26
    assert everything[0].job == "other"  # newest first
    assert [e.id for e in everything[1:]] == [h.id for h in reversed(hs)]
    assert len([e async for e in q.executions.list(job="work", status="failed")]) == 5
    assert len([e async for e in q.executions.list(group="g1")]) == 10
    assert len([e async for e in q.executions.list(attempts=2)]) == 5
    assert len([e async for e in q.executions.list(attempts_gt=1)]) == 5
    assert len([e async for e in q.executions.list(attempts_lt=2)]) == 21
    assert len([e async for e in q.executions.list(job=["work", "other"], limit=3)]) == 3
    assert len([e async for e in q.executions.list(started_after=before)]) == 26
    assert [e async for e in q.executions.list(started_before=before)] == []
    assert len([e async for e in q.executions.list(completed_after=before)]) == 26
    assert [e async for e in q.executions.list(completed_before=before)] == []
    first = await q.executions.first(job="work", status="completed")
    assert first is not None and first.id == hs[-1].id
    got = await q.executions.get(hs[3].id)
    assert got is not None and got.info is not None and got.info.status == "completed"
    assert await q.executions.get("nope") is None
    with pytest.raises(ValueError, match="unknown status 'done'"):
        await q.executions.first(status="done")
    with pytest.raises(TypeError, match="unknown execution filter 'color'"):
        await q.executions.first(color="red")

    stats = await q.stats()
    assert stats["by_status"]["completed"] == 21 and stats["by_status"]["failed"] == 5
    assert stats["by_job"]["work"] == {"completed": 20, "failed": 5}
    assert stats["retries"] == 5
    assert stats["mean_runtime"] is not None and stats["p95_runtime"] is not None


async def test_retention_deletes_old_finished_executions(make_queue: Any) -> None:
    @job
    async def noop(n: int) -> int:
        return n

    q = await make_queue(noop, retention={"max_per_status": 3})
    for i in range(6):
        await q.jobs.noop.run(n=i)
    assert await q.apply_retention() == 3
    left = [e async for e in q.executions.list()]
    assert len(left) == 3

    q2 = await make_queue(noop, retention={"completed": "1ms"})
    await q2.jobs.noop.run(n=1)
    await asyncio.sleep(0.01)  # let the 1 ms retention window pass (a clock fact, not a sync)
    assert await q2.apply_retention() == 1
    assert [e async for e in q2.executions.list()] == []
    with pytest.raises(qanat.ConfigurationError, match="unknown retention key 'running'"):
        Queue(jobs=[], storage="memory://", retention={"running": "1d"})


def test_sync_facade_blocks() -> None:
    @job
    async def double(n: int) -> int:
        return n * 2

    worker_q = Queue(jobs=[double], storage="memory://")
    # memory storage lives in one object: a second Queue over it shares the data
    client = Queue(jobs=[double], storage=worker_q.storage)

    async def serve(stop: asyncio.Event) -> None:
        async with worker_q:
            await stop.wait()

    import threading

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    t = threading.Thread(target=loop.run_until_complete, args=(serve(stop),))
    t.start()
    try:
        s = client.sync
        h = s.jobs.double.start(n=21)
        assert h.result(timeout=5) == 42
        assert s.executions.get(h.id).status() == "completed"
        listed = s.executions.list()
        assert [e.status() for e in listed] == ["completed"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
        client.sync.close()
        loop.close()


def test_sync_facade_sends_on_pipes_and_lists_events() -> None:
    from qanat import Pipe

    orders = Pipe("orders")

    @job(triggers=[orders.into(lambda e: {"n": e["n"]})])
    async def handle_order(n: int) -> int:
        return n

    q = Queue(jobs=[handle_order], pipes=[orders], storage="memory://")
    try:
        info = q.sync.pipes.orders.send({"n": 7})
        assert len(info.executions) == 1
        listed = q.sync.events.list(pipe="orders")
        assert [(e.id, e.executions) for e in listed] == [(info.id, info.executions)]
        pending = q.sync.executions.get(info.executions[0])
        assert pending.status() == "pending"  # no worker runs in a sync client
    finally:
        q.sync.close()
