"""``pipe.wait_for``: durable waits for events, on memory and SQLite storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import pytest_asyncio

from qanat import Job, Pipe, Queue, job
from support import eventually


class Approval(pydantic.BaseModel):
    order_id: int
    approved: bool
    by: dict[str, Any] = {}


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    queues: list[Queue] = []

    async def make(jobs: list[Job[Any]], pipes: list[Pipe[Any]], **kw: Any) -> Queue:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/q.db"
        concurrency = kw.pop("concurrency", None)
        q = Queue(jobs=jobs, pipes=pipes, storage=url, **kw)
        await q.start(concurrency=concurrency)
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.stop(grace=1)


async def waiting(q: Queue, execution_id: str) -> None:
    async def check() -> bool:
        e = await q.executions.get(execution_id)
        assert e is not None
        return await e.status() == "waiting" and e.info is not None and e.info.owner is None

    await eventually(check)


async def status(q: Queue, execution_id: str) -> str:
    e = await q.executions.get(execution_id)
    assert e is not None
    return await e.status()


async def test_dict_match_with_nested_fields_gets_the_matching_event(make_queue: Any) -> None:
    approvals = Pipe("approvals", input=Approval)

    @job
    async def order(order_id: int) -> Any:
        got = await approvals.wait_for({"order_id": order_id, "by": {"role": "boss"}})
        assert got is None or isinstance(got, Approval)
        return got.model_dump() if got else None

    q = await make_queue([order], [approvals])
    h = await order.start(order_id=7)
    await waiting(q, h.id)
    await approvals.send({"order_id": 8, "approved": True, "by": {"role": "boss"}})
    await approvals.send({"order_id": 7, "approved": True, "by": {"role": "clerk"}})
    await approvals.send({"order_id": 7, "approved": False})
    await asyncio.sleep(0.05)
    assert await status(q, h.id) == "waiting"
    await approvals.send({"order_id": 7, "approved": True, "by": {"role": "boss", "n": 1}})
    out = await h.result(timeout=10)
    assert out == {"order_id": 7, "approved": True, "by": {"role": "boss", "n": 1}}
    [step] = [s for s in await h.steps() if s.kind == "wait"]
    assert step.key == "wait:approvals"


async def test_predicate_match_only_after_the_wait_began(make_queue: Any) -> None:
    approvals = Pipe("approvals", input=Approval)

    @job
    async def order(order_id: int) -> Any:
        got = await approvals.wait_for(lambda a: a.order_id == order_id and a.approved)
        return got.by if got else None

    q = await make_queue([order], [approvals])
    await approvals.send({"order_id": 1, "approved": True, "by": {"when": "before"}})
    h = await order.start(order_id=1)
    await waiting(q, h.id)
    await approvals.send({"order_id": 1, "approved": False})
    await approvals.send({"order_id": 2, "approved": True})
    await asyncio.sleep(0.1)
    await waiting(q, h.id)  # woken, looked, suspended again
    await approvals.send({"order_id": 1, "approved": True, "by": {"when": "after"}})
    assert await h.result(timeout=10) == {"when": "after"}


async def test_dict_match_ignores_events_sent_before_the_wait(make_queue: Any) -> None:
    approvals = Pipe("approvals")

    @job
    async def order(order_id: int) -> Any:
        return await approvals.wait_for({"order_id": order_id}, timeout=0.5)

    await make_queue([order], [approvals])
    await approvals.send({"order_id": 3})
    h = await order.start(order_id=3)
    assert await h.result(timeout=10) is None


async def test_timeout_returns_none_and_later_sends_change_nothing(make_queue: Any) -> None:
    approvals = Pipe("approvals")

    @job
    async def order(order_id: int) -> Any:
        first = await approvals.wait_for({"order_id": order_id}, timeout="300ms")
        second = await approvals.wait_for({"order_id": order_id}, timeout=30)
        return [first, second]

    q = await make_queue([order], [approvals])
    h = await order.start(order_id=4)
    await eventually(lambda: _has_step(h, "wait:approvals"))  # the first one timed out
    await waiting(q, h.id)
    await approvals.send({"order_id": 4, "x": 1})
    assert await h.result(timeout=10) == [None, {"order_id": 4, "x": 1}]


async def _has_step(h: Any, key: str) -> bool:
    return key in {s.key for s in await h.steps()}


async def test_two_waiters_each_get_one_event_exactly_once(make_queue: Any) -> None:
    approvals = Pipe("approvals")
    seen: list[tuple[str, Any]] = []

    @job
    async def watcher(tag: str) -> Any:
        got = await approvals.wait_for({"order_id": 9})
        seen.append((tag, got))
        return got

    q = await make_queue([watcher], [approvals])
    a = await watcher.start(tag="a")
    b = await watcher.start(tag="b")
    await waiting(q, a.id)
    await waiting(q, b.id)
    info = await approvals.send({"order_id": 9, "n": 1})
    await approvals.send({"order_id": 9, "n": 2})  # nobody waits any more
    assert await a.result(timeout=10) == {"order_id": 9, "n": 1}
    assert await b.result(timeout=10) == {"order_id": 9, "n": 1}
    assert sorted(seen) == [("a", {"order_id": 9, "n": 1}), ("b", {"order_id": 9, "n": 1})]
    assert info.id and sorted(info.woke) == sorted([a.id, b.id])
    assert await q.storage.waiter(a.id, "wait:approvals") is None  # forgotten once done
    listed = [e async for e in q.events.list(pipe="approvals")]
    assert [sorted(e.woke) for e in listed] == [[], sorted([a.id, b.id])]  # newest first


async def test_waiting_holds_no_concurrency_slot(make_queue: Any) -> None:
    approvals = Pipe("approvals")

    @job
    async def waiter(n: int) -> Any:
        return await approvals.wait_for({"n": n})

    @job
    async def quick(n: int) -> int:
        return n * 2

    q = await make_queue([waiter, quick], [approvals], concurrency=1)
    hs = [await waiter.start(n=i) for i in range(3)]
    for h in hs:
        await waiting(q, h.id)
    assert await quick.run(n=21) == 42  # one slot, three waiters: still runs
    for i in range(3):
        await approvals.send({"n": i})
    assert [await h.result(timeout=10) for h in hs] == [{"n": i} for i in range(3)]


async def test_wait_on_unregistered_pipe_fails_loudly(make_queue: Any) -> None:
    stray = Pipe("stray")

    @job(retry=1)
    async def lost() -> Any:
        return await stray.wait_for()

    await make_queue([lost], [])
    h = await lost.start()
    with pytest.raises(Exception, match="not registered"):
        await h.result(timeout=10)
