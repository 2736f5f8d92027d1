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
