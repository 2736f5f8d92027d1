"""``queue.monitor`` (the dashboard's read models), the ``search`` filter of
``queue.executions`` and the global ``pause``/``resume`` hooks."""

from __future__ import annotations

from typing import Any

import pytest

from qanat import Pipe, job, run, sleep
from qanat.hooks import Event
from qanat.storage.base import ExecutionRecord


@job(retry=1)
async def ok(n: int) -> int:
    await run("one", lambda: n)
    return n


@job(retry=1)
async def bad(n: int) -> int:
    raise RuntimeError(f"bad {n}")


@job(cron="*/5 * * * *")
async def ticking() -> None:
    return None


@job
async def napper() -> None:
    await sleep("1h")


approvals = Pipe("m_approvals")


@job
async def asks(order_id: int) -> Any:
    return await approvals.wait_for({"order_id": order_id}, timeout="1h")


async def test_counts_and_throughput(make_queue: Any) -> None:
    q = await make_queue(ok, bad, ticking)
    for i in range(3):
        await (await q.jobs.ok.start(n=i)).wait(5)
    for i in range(2):
        await (await q.jobs.bad.start(n=i)).wait(5)
    counts = await q.monitor.counts()
    assert counts["ok"]["completed"] == 3 and counts["bad"]["failed"] == 2
    assert counts["ticking"]["pending"] == 0  # registered, never ran: all zeros
    now = q.clock()
    tp = await q.monitor.throughput(now - 60, now + 1, 6)
    assert sum(tp.series["ok"]["completed"]) == 3 and sum(tp.series["ok"]["failed"]) == 0
    assert sum(tp.series["bad"]["failed"]) == 2
    assert tp.series["ok"]["completed"][-1] == 3  # all in the newest bucket
    assert not tp.truncated
    empty = await q.monitor.throughput(now - 7200, now - 3600, 4)
    assert empty.series == {}
    with pytest.raises(ValueError, match="until > since"):
        await q.monitor.throughput(now, now, 4)


async def test_cron_next_and_last_tick(make_queue: Any) -> None:
    q = await make_queue(ticking, worker=False)
    [info] = await q.monitor.cron()
    assert info.job == "ticking" and info.expressions == ["*/5 * * * *"]
    assert info.last_tick is None and 0 < info.next_tick - q.clock() <= 300
    tick = info.next_tick - 300
    rec = ExecutionRecord(
        "t1", "ticking", "{}", key=f"cron:{int(tick)}", created_at=tick, run_at=tick
    )
    await q.storage.enqueue([rec])
    [info] = await q.monitor.cron()
    assert info.last_tick == int(tick) and info.last_execution == "t1"


async def test_workers_and_waiting(make_queue: Any) -> None:
    q = await make_queue(napper, asks, pipes=[approvals], hot_sleep=0)
    h = await q.jobs.asks.start(order_id=7)
    await _until(lambda: _status(q, h.id), "waiting")
    [w] = await q.monitor.waiting()
    assert w.execution_id == h.id and w.pipe == "m_approvals" and w.match == {"order_id": 7}
    workers = await q.monitor.workers()
    assert len(workers) == 1 and workers[0].id == q.worker.id


async def test_search_filter(make_queue: Any) -> None:
    q = await make_queue(ok, worker=False)
    a = await q.jobs.ok.start(n=12345)
    await q.jobs.ok.start(n=6)
    assert [e.id async for e in q.executions.list(search="12345")] == [a.id]
    assert [e.id async for e in q.executions.list(search=a.id)] == [a.id]
    with pytest.raises(TypeError, match="search must be a string"):
        [e async for e in q.executions.list(search=5)]


async def test_pause_and_resume_hooks(make_queue: Any) -> None:
    q = await make_queue(ok, worker=False)
    seen: list[tuple[str, str, Any]] = []

    def hook(ev: Event) -> None:
        seen.append((ev.name, ev.execution_id, ev.payload))

    q.on("pause", hook)
    q.on("resume", hook)
    h = await q.jobs.ok.start(n=1)
    assert await h.pause() == "paused"
    assert await h.pause() == "paused"  # no change: no second hook
    assert await h.resume() == "pending"
    h2 = await q.jobs.ok.start(n=2)
    assert await q.executions.pause(job="ok") == 2
    assert await q.executions.resume(job="ok") == 2
    names = [(n, i) for n, i, _ in seen]
    assert names[:2] == [("pause", h.id), ("resume", h.id)]
    assert sorted(names[2:4]) == sorted([("pause", h.id), ("pause", h2.id)])
    assert sorted(names[4:]) == sorted([("resume", h.id), ("resume", h2.id)])
    assert seen[0][2] == {"input": {"n": 1}, "detail": "paused"}
    with pytest.raises(ValueError, match="unknown event"):
        q.on("paused", hook)


async def _status(q: Any, eid: str) -> str:
    return str((await q.storage.get(eid)).status)


async def _until(get: Any, want: str, timeout: float = 5.0) -> None:
    import asyncio

    async def loop() -> None:
        while await get() != want:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)
