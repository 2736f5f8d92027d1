"""``job.wait_for``: wait for a completion of another job whose input matches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import pytest_asyncio

from qanat import Job, Queue, job
from support import eventually


class Receipt(pydantic.BaseModel):
    order_id: int
    total: float


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    queues: list[Queue] = []

    async def make(jobs: list[Job[Any]], **kw: Any) -> Queue:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/q.db"
        q = Queue(jobs=jobs, storage=url, **kw)
        await q.start()
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


def jobs() -> tuple[Job[Any], Job[Any]]:
    @job
    async def charge(order_id: int, customer: dict[str, Any]) -> Receipt:
        return Receipt(order_id=order_id, total=order_id * 1.5)

    @job
    async def follow(order_id: int, tier: str) -> Any:
        got = await charge.wait_for({"order_id": order_id, "customer": {"tier": tier}})
        assert isinstance(got, Receipt)  # revived to the output type
        return got.total

    return charge, follow


async def test_dict_match_on_input_gets_the_output_revived(make_queue: Any) -> None:
    charge, follow = jobs()
    q = await make_queue([charge, follow])
    h = await follow.start(order_id=2, tier="gold")
    await waiting(q, h.id)
    await charge.run(order_id=3, customer={"tier": "gold"})
    await charge.run(order_id=2, customer={"tier": "silver"})
    await asyncio.sleep(0.05)
    assert await (await q.executions.get(h.id)).status() == "waiting"  # type: ignore[union-attr]
    done = await charge.start(order_id=2, customer={"tier": "gold", "n": 1})
    assert await h.result(timeout=10) == 3.0
    # recorded while someone waited (matching or not); the matching one woke the waiter
    events = [e async for e in q.events.list(pipe=f"job:{charge.name}")]
    assert len(events) == 3 and [e.woke for e in events] == [[h.id], [], []]
    event = events[0]
    assert event.source == done.id
    assert event.data["input"]["order_id"] == 2


async def test_predicate_and_only_completions_after_the_wait_began(make_queue: Any) -> None:
    charge, _ = jobs()

    @job
    async def follow(order_id: int) -> Any:
        got = await charge.wait_for(lambda inp: inp["order_id"] == order_id, timeout=30)
        return got.model_dump() if got else None

    q = await make_queue([charge, follow])
    await charge.run(order_id=5, customer={})  # before the wait: not seen
    h = await follow.start(order_id=5)
    await waiting(q, h.id)
    await charge.run(order_id=6, customer={})
    await asyncio.sleep(0.05)
    await waiting(q, h.id)
    await charge.run(order_id=5, customer={"late": True})
    assert await h.result(timeout=10) == {"order_id": 5, "total": 7.5}


async def test_timeout_returns_none(make_queue: Any) -> None:
    charge, _ = jobs()

    @job
    async def follow(order_id: int) -> Any:
        return await charge.wait_for({"order_id": order_id}, timeout="300ms")

    await make_queue([charge, follow])
    await charge.run(order_id=1, customer={})
    h = await follow.start(order_id=1)
    assert await h.result(timeout=10) is None


async def test_two_waiters_each_receive_one_completion_exactly_once(make_queue: Any) -> None:
    charge, _ = jobs()
    seen: list[tuple[str, float]] = []

    @job
    async def follow(tag: str) -> Any:
        got = await charge.wait_for({"order_id": 4})
        seen.append((tag, got.total))
        return got.total

    q = await make_queue([charge, follow])
    a = await follow.start(tag="a")
    b = await follow.start(tag="b")
    await waiting(q, a.id)
    await waiting(q, b.id)
    first = await charge.start(order_id=4, customer={})
    await first.result(timeout=10)
    await charge.run(order_id=4, customer={"again": 1})
    assert await a.result(timeout=10) == 6.0 and await b.result(timeout=10) == 6.0
    assert sorted(seen) == [("a", 6.0), ("b", 6.0)]
    events = [e async for e in q.events.list(pipe=f"job:{charge.name}")]
    assert [e.source for e in events] == [first.id]  # nobody waits any more: not recorded


async def test_outside_a_job_a_plain_call_waits_for_a_later_completion(make_queue: Any) -> None:
    charge, _ = jobs()
    await make_queue([charge])
    await charge.run(order_id=8, customer={})
    assert await charge.wait_for({"order_id": 8}, timeout=0.2) is None  # before the call
    task = asyncio.create_task(charge.wait_for(lambda inp: inp["order_id"] == 8, timeout=10))
    await asyncio.sleep(0.05)
    await charge.run(order_id=9, customer={})
    await charge.run(order_id=8, customer={"x": 1})
    got = await task
    assert isinstance(got, Receipt) and got.total == 12.0
