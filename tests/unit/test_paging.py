"""``queue.executions.page`` and ``queue.events.page``: one page and the cursor of the
next, for callers that page across requests (the HTTP API, the dashboard)."""

from __future__ import annotations

from typing import Any

import pytest

from qanat import Pipe, Queue, job

pings = Pipe("pings")


@job
async def tick(n: int) -> int:
    return n


async def test_execution_pages_follow_the_cursor_through_every_match(make_queue: Any) -> None:
    q = await make_queue(tick, worker=False)
    ids = [(await q.jobs.tick.start(n=i)).id for i in range(5)]
    seen, cursor = [], None
    while True:
        page, cursor = await q.executions.page(limit=2, cursor=cursor, job="tick")
        assert len(page) <= 2
        seen += [e.id for e in page]
        if cursor is None:
            break
    assert seen == ids[::-1] == [e.id async for e in q.executions.list(job="tick")]
    empty, nxt = await q.executions.page(status="failed")
    assert (empty, nxt) == ([], None)


async def test_event_pages_follow_the_cursor() -> None:
    q = Queue(pipes=[pings], storage="memory://")
    await q.start(worker=False)
    try:
        sent = [(await q.pipes.pings.send({"i": i})).id for i in range(3)]
        first, cursor = await q.events.page(pipe="pings", limit=2)
        rest, end = await q.events.page(pipe="pings", limit=2, cursor=cursor)
        assert [e.id for e in first + rest] == sent[::-1] and end is None
    finally:
        await q.stop()


@pytest.mark.parametrize("limit", [0, -1, True, 2.5])
async def test_a_bad_limit_or_cursor_is_a_value_error(make_queue: Any, limit: Any) -> None:
    q = await make_queue(tick, worker=False)
    with pytest.raises(ValueError, match="limit"):
        await q.executions.page(limit=limit)
    with pytest.raises(ValueError, match="limit"):
        await q.events.page(limit=limit)
    with pytest.raises(ValueError, match="cursor"):
        await q.executions.page(cursor="nonsense")
    with pytest.raises(ValueError, match="cursor"):
        await q.events.page(cursor="nonsense")
