"""Fencing in the engine, on memory storage: a worker whose claim was taken over has its
late progress and log lines refused (and no ``progress`` hook fires for them); hooks that
log after the worker's own finish are written under no claim."""

from __future__ import annotations

import asyncio
from typing import Any

import qanat
from qanat import job, run
from qanat.storage import MemoryStorage
from qanat.storage.base import now
from support import eventually


async def test_late_progress_and_log_of_a_taken_over_execution_are_refused(
    make_queue: Any,
) -> None:
    go = asyncio.Event()
    tried: list[tuple[str, str | None]] = []
    hooked: list[Any] = []

    async def first() -> str:
        await go.wait()
        qanat.progress(50, "stale")
        qanat.log("stale line")
        return "stale"

    @job
    async def slow() -> str:
        return str(await run("s1", first))

    store = MemoryStorage()
    real_progress = store.set_progress

    async def set_progress(execution_id: str, owner: str | None, progress: str) -> bool:
        done = await real_progress(execution_id, owner, progress)
        tried.append((progress, owner if done else None))
        return done

    store.set_progress = set_progress  # type: ignore[method-assign]
    q = await make_queue(slow, storage=store, lease=60)
    q.on("progress", hooked.append)
    h = await q.jobs.slow.start()
    await eventually(lambda: _status(store, h.id, "running"))
    # another worker takes it over, as after this one's lease lapsed while it was frozen
    [taken] = await store.claim("thief", ["slow"], 1, 60.0, now() + 61)
    assert taken.id == h.id and taken.recoveries == 1
    go.set()
    await eventually(lambda: _true(bool(tried)))
    await eventually(lambda: _true(h.id not in q.worker.active))
    assert tried == [('{"pct": 50.0, "message": "stale", "details": null}', None)]
    rec = await store.get(h.id)
    assert rec is not None and (rec.owner, rec.status, rec.progress) == ("thief", "running", None)
    assert await store.logs(h.id) == [] and await store.steps(h.id) == []
    assert hooked == []


async def test_hooks_after_the_finish_log_and_report_progress(make_queue: Any) -> None:
    def on_success(_input: Any, output: Any) -> None:
        qanat.progress(100, f"hook saw {output}")
        qanat.log("hook line", output=output)

    @job(on_success=on_success)
    async def quick() -> int:
        return 7

    q = await make_queue(quick)
    h = await q.jobs.quick.start()
    assert await h.result(timeout=5) == 7
    lines = await eventually(lambda: h.logs())
    assert [(g.message, g.fields) for g in lines] == [("hook line", {"output": 7})]
    progress = await eventually(lambda: h.progress())
    assert progress.message == "hook saw 7"


async def _status(store: MemoryStorage, ident: str, status: str) -> bool:
    rec = await store.get(ident)
    return rec is not None and rec.status == status


async def _true(value: bool) -> bool:
    return value


async def test_progress_and_logs_of_an_execution_are_stored_in_the_order_made(
    make_queue: Any,
) -> None:
    # A backend may run concurrent calls on different connections (Redis, PostgreSQL):
    # here each call takes longer the earlier it was made, so unordered writes would
    # store the first progress last.
    store = MemoryStorage()
    real_progress, real_logs = store.set_progress, store.append_logs
    delays = iter([0.05, 0.04, 0.03, 0.02, 0.01, 0.0] * 2)
    stored: list[str] = []

    async def set_progress(execution_id: str, owner: str | None, progress: str) -> bool:
        await asyncio.sleep(next(delays))
        stored.append(progress)
        return await real_progress(execution_id, owner, progress)

    async def append_logs(owner: str | None, logs: Any) -> int:
        await asyncio.sleep(next(delays))
        return await real_logs(owner, logs)

    store.set_progress = set_progress  # type: ignore[method-assign]
    store.append_logs = append_logs  # type: ignore[method-assign]

    @job
    async def counting() -> int:
        for i in range(1, 6):
            qanat.progress(i * 20, f"{i} of 5")
            qanat.log(f"line {i}")
        return 5

    q = await make_queue(counting, storage=store)
    h = await q.jobs.counting.start()
    assert await h.result(timeout=5) == 5
    assert [qanat.codec.loads(p)["pct"] for p in stored] == [20, 40, 60, 80, 100]
    rec = await store.get(h.id)
    assert rec is not None and qanat.codec.loads(rec.progress or "{}")["pct"] == 100
    assert [line.message for line in await store.logs(h.id)] == [f"line {i}" for i in range(1, 6)]
