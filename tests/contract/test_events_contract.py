"""The storage contract for events (pipes), run against every backend (see conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from qanat.storage import EventRecord, ExecutionRecord, Finish, Storage, TriggerFailure
from qanat.storage.base import now

T0 = 1_700_000_000.0
LEASE = 30.0


def rec(ident: str, job: str = "j", **kw: Any) -> ExecutionRecord:
    kw.setdefault("created_at", T0)
    kw.setdefault("run_at", T0)
    kw.setdefault("available_at", kw["run_at"])
    return ExecutionRecord(id=ident, job=job, input=kw.pop("input", "{}"), **kw)


def ev(ident: str, pipe: str = "p", at: float = T0, **kw: Any) -> EventRecord:
    return EventRecord(ident, pipe, kw.pop("data", '{"n":1}'), at, **kw)


async def test_send_stores_event_executions_and_failures(storage: Storage) -> None:
    fail = TriggerFailure("e1", "broken", "ValueError: boom", T0)
    out = await storage.send(
        ev("e1", source="x1"), [rec("a", job="j1"), rec("b", job="j2")], [fail]
    )
    assert out == EventRecord("e1", "p", '{"n":1}', T0, "x1", ["a", "b"], [fail])
    got = await storage.get_many(["a", "b"])
    assert {r.id: r.job for r in got} == {"a": "j1", "b": "j2"}
    assert (await storage.get("a")) == rec("a", job="j1")
    page = await storage.events(None, None, 10, None)
    assert page.cursor is None
    assert page.items == [out]
    assert await storage.trigger_failures("e1") == [fail]
    # the triggered executions are claimable like any other
    claimed = await storage.claim("w1", ["j1", "j2"], 10, LEASE, now())
    assert {r.id for r in claimed} == {"a", "b"}


async def test_send_without_triggers_and_with_existing_key(storage: Storage) -> None:
    out = await storage.send(ev("e0"), [], [])
    assert out.executions == [] and out.failures == []
    await storage.enqueue([rec("a", key="k")])
    out = await storage.send(ev("e1"), [rec("b", key="k")], [])
    assert out.executions == ["a"]  # the existing execution, as enqueue
    assert await storage.get("b") is None


async def test_send_twice_with_one_id_writes_nothing_more(storage: Storage) -> None:
    first = await storage.send(ev("e1"), [rec("a")], [TriggerFailure("e1", "j", "x", T0)])
    again = await storage.send(
        ev("e1", data='{"n":2}'), [rec("b")], [TriggerFailure("e1", "j", "y", T0)]
    )
    assert again == first
    assert await storage.get("b") is None
    assert len((await storage.events(None, None, 10, None)).items) == 1
    assert [f.error for f in await storage.trigger_failures("e1")] == ["x"]


async def test_events_page_newest_first_with_pipe_and_since(storage: Storage) -> None:
    for i in range(7):
        await storage.send(ev(f"e{i}", pipe="a" if i % 2 else "b", at=T0 + i), [], [])
    seen: list[str] = []
    cursor = None
    while True:
        page = await storage.events(None, None, 3, cursor)
        seen.extend(e.id for e in page.items)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [f"e{i}" for i in reversed(range(7))]
    exact = await storage.events(None, None, 7, None)
    assert len(exact.items) == 7 and exact.cursor is None
    only_a = await storage.events("a", None, 10, None)
    assert [e.id for e in only_a.items] == ["e5", "e3", "e1"]
    recent = await storage.events(None, T0 + 4, 10, None)
    assert [e.id for e in recent.items] == ["e6", "e5", "e4"]
    both = await storage.events("b", T0 + 2, 10, None)
    assert [e.id for e in both.items] == ["e6", "e4", "e2"]
    with pytest.raises(ValueError):
        await storage.events(None, None, 10, "not a cursor")


async def test_finish_completed_enqueues_children_and_failures(storage: Storage) -> None:
    await storage.enqueue([rec("up")])
    await storage.claim("w1", ["j"], 1, LEASE, now())
    fail = TriggerFailure("up", "down2", "bad", T0)
    fin = Finish("completed", output="1", children=[rec("down", job="d")], failures=[fail])
    assert await storage.finish("up", "w1", fin)
    got = await storage.get("down")
    assert got is not None and got.status == "pending" and got.job == "d"
    up = await storage.get("up")
    assert up is not None and up.status == "completed" and up.output == "1"
    assert await storage.trigger_failures("up") == [fail]


async def test_finish_with_children_refused_or_not_completed_writes_none(storage: Storage) -> None:
    await storage.enqueue([rec("up"), rec("up2")])
    await storage.claim("w1", ["j"], 2, LEASE, now())
    fail = TriggerFailure("up", "x", "bad", T0)
    lost = Finish("completed", output="1", children=[rec("c1")], failures=[fail])
    assert not await storage.finish("up", "other", lost)
    assert await storage.get("c1") is None
    assert await storage.trigger_failures("up") == []
    failed = Finish("failed", error="{}", children=[rec("c2")], failures=[fail])
    assert await storage.finish("up2", "w1", failed)
    assert await storage.get("c2") is None
    assert await storage.trigger_failures("up") == []


async def test_many_finishes_with_and_without_children(storage: Storage) -> None:
    import asyncio

    ups = [rec(f"u{i}") for i in range(6)]
    await storage.enqueue(ups)
    await storage.claim("w1", ["j"], 6, LEASE, now())
    fins = [
        Finish("completed", output=str(i), children=[rec(f"c{i}", job="d")] if i % 2 else [])
        for i in range(6)
    ]
    done = await asyncio.gather(*(storage.finish(f"u{i}", "w1", f) for i, f in enumerate(fins)))
    assert all(done)
    children = await storage.get_many([f"c{i}" for i in range(6)])
    assert sorted(c.id for c in children) == ["c1", "c3", "c5"]


async def test_purge_events_by_age_and_keep(storage: Storage) -> None:
    for i in range(5):
        await storage.send(
            ev(f"e{i}", at=T0 + i), [rec(f"x{i}")], [TriggerFailure(f"e{i}", "j", "no", T0 + i)]
        )
    await storage.enqueue([rec("up")])
    await storage.claim("w1", ["j"], 1, LEASE, now())
    old = TriggerFailure("up", "d", "old", T0)
    await storage.finish("up", "w1", Finish("completed", output="1", failures=[old]))
    assert await storage.purge_events(T0 + 2, None) == 2
    left = await storage.events(None, None, 10, None)
    assert [e.id for e in left.items] == ["e4", "e3", "e2"]
    assert await storage.trigger_failures("e0") == []
    assert await storage.trigger_failures("up") == []  # recorded before the cut-off
    assert len(await storage.trigger_failures("e2")) == 1
    assert await storage.get("x0") is not None  # executions follow their own retention
    assert await storage.purge_events(None, 1) == 2
    left = await storage.events(None, None, 10, None)
    assert [e.id for e in left.items] == ["e4"]
    assert left.items[0].executions == ["x4"]
    assert await storage.purge_events(None, 5) == 0
