"""The storage contract for waiters (``pipe.wait_for``), run against every backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from qanat.storage import EventRecord, ExecutionRecord, Storage
from qanat.storage.base import Checkpoint, Finish, StepRecord, Waiter, now
from qanat.storage.matching import project, shape_and_value

LEASE = 30.0


def rec(ident: str) -> ExecutionRecord:
    t = now()
    return ExecutionRecord(id=ident, job="j", input="{}", created_at=t, run_at=t, available_at=t)


def waiter(eid: str, match: dict[str, Any] | None, deadline: float | None = None) -> Waiter:
    shape, value = shape_and_value(match) if match is not None else (None, None)
    return Waiter(eid, "wait:p", "p", shape, value, now(), deadline)


async def running(storage: Storage, *ids: str) -> None:
    await storage.enqueue([rec(i) for i in ids])
    got = await storage.claim("w1", ["j"], 1000, LEASE, now())
    assert {g.id for g in got} >= set(ids)


def test_shape_and_value_and_projection() -> None:
    shape, value = shape_and_value({"b": {"y": 2, "x": 1}, "a": "s"})
    assert shape == '[["a"],["b","x"],["b","y"]]' and value == '["s",1,2]'
    assert project({"a": "s", "b": {"x": 1, "y": 2, "z": 0}, "c": 3}, shape) == value
    assert project({"a": "s", "b": {"x": 1}}, shape) is None
    assert project({"a": "s", "b": 5}, shape) is None
    assert shape_and_value({}) == ("[]", "[]") and project({"any": 1}, "[]") == "[]"


async def test_wait_records_and_suspends_then_send_delivers_and_wakes(storage: Storage) -> None:
    await running(storage, "e1", "e2")
    st = await storage.wait("e1", "w1", waiter("e1", {"order": {"id": 1}}, now() + 60), None, now())
    assert st.stop is None and st.suspended and st.waiter is not None
    e1 = await storage.get("e1")
    assert e1 is not None and e1.status == "waiting" and e1.owner is None
    assert e1.available_at == st.waiter.deadline
    assert (await storage.wait("e2", "nobody", waiter("e2", {}), None, now())).stop == "lost"
    assert await storage.waiter("e2", "wait:p") is None

    await storage.send(EventRecord("x", "p", '{"order": {"id": 2}}', now()), [], [])
    await storage.send(EventRecord("y", "q", '{"order": {"id": 1}}', now()), [], [])
    assert (await storage.waiter("e1", "wait:p")).event_id is None  # type: ignore[union-attr]
    before = now()
    await storage.send(EventRecord("z", "p", '{"order": {"id": 1}, "k": 0}', now()), [], [])
    await storage.send(EventRecord("z2", "p", '{"order": {"id": 1}}', now()), [], [])
    w = await storage.waiter("e1", "wait:p")
    assert w is not None and w.event_id == "z" and w.data == '{"order": {"id": 1}, "k": 0}'
    e1 = await storage.get("e1")
    assert e1 is not None and e1.available_at is not None and before <= e1.available_at <= now()

    [_again] = await storage.claim("w2", ["j"], 10, LEASE, now())
    st = await storage.wait("e1", "w2", waiter("e1", {"order": {"id": 1}}), None, now())
    assert not st.suspended and st.waiter is not None and st.waiter.event_id == "z"
    step = StepRecord("e1", "wait:p", "wait", "wait:p", "completed", "null", None, 1, 1, 0, 0)
    assert await storage.end_wait("e1", "w2", Checkpoint(step)) is None
    assert await storage.waiter("e1", "wait:p") is None
    assert [s.key for s in await storage.steps("e1")] == ["wait:p"]


async def test_predicate_waiters_are_poked_and_suspend_only_without_news(storage: Storage) -> None:
    await running(storage, "e1")
    st = await storage.wait("e1", "w1", waiter("e1", None), 0, now())
    assert st.suspended
    await storage.send(EventRecord("a", "p", "{}", now()), [], [])
    [_] = await storage.claim("w1", ["j"], 10, LEASE, now())
    st = await storage.wait("e1", "w1", waiter("e1", None), -1, now())
    assert not st.suspended and st.waiter is not None and st.waiter.pokes == 1
    await storage.send(EventRecord("b", "p", "{}", now()), [], [])  # came while it looked
    st = await storage.wait("e1", "w1", waiter("e1", None), 1, now())
    assert not st.suspended and st.waiter is not None and st.waiter.pokes == 2
    st = await storage.wait("e1", "w1", waiter("e1", None), 2, now())
    assert st.suspended


async def test_past_deadline_does_not_suspend_and_pause_request_pauses(storage: Storage) -> None:
    await running(storage, "e1", "e2")
    st = await storage.wait("e1", "w1", waiter("e1", {"a": 1}, now() - 1), None, now())
    assert not st.suspended and st.waiter is not None and st.waiter.event_id is None
    assert await storage.pause("e2") in ("running", "waiting")
    st = await storage.wait("e2", "w1", waiter("e2", {"a": 1}), None, now())
    assert st.suspended and st.stop == "paused"
    e2 = await storage.get("e2")
    assert e2 is not None and e2.status == "paused" and e2.available_at is None


async def test_two_waiters_one_event_and_restart_forgets_waiters(storage: Storage) -> None:
    await running(storage, "e1", "e2")
    for e in ("e1", "e2"):
        assert (await storage.wait(e, "w1", waiter(e, {"n": 1}), None, now())).suspended
    await storage.send(EventRecord("v", "p", '{"n": 1}', now()), [], [])
    await storage.send(EventRecord("v2", "p", '{"n": 1}', now()), [], [])
    for e in ("e1", "e2"):
        w = await storage.waiter(e, "wait:p")
        assert w is not None and w.event_id == "v"
    await storage.cancel(["e1"], "x")
    assert await storage.restart("e1", now()) is not None
    assert await storage.waiter("e1", "wait:p") is None


async def test_send_cost_does_not_grow_with_waiters(storage: Storage) -> None:
    """A send to a pipe with 300 waiters (none matching) costs about what a send to a pipe
    with none costs: an index look-up, not a scan. Sends to the two pipes alternate, so
    whatever else the machine is doing weighs on both sides alike."""
    ids = [f"e{i}" for i in range(300)]
    await running(storage, *ids)
    for i in ids:
        await storage.wait(i, "w1", waiter(i, {"id": i}), None, now())
    spent = {"p": 0.0, "q": 0.0}
    for n in range(100):
        for pipe in ("p", "q"):
            t = time.perf_counter()
            await storage.send(EventRecord(f"{pipe}{n}", pipe, '{"id": "none"}', now()), [], [])
            spent[pipe] += time.perf_counter() - t
    assert spent["p"] < 3 * spent["q"] + 0.05, spent


async def test_send_reports_and_stores_the_executions_it_woke(storage: Storage) -> None:
    await running(storage, "e1", "e2", "e3")
    assert (await storage.wait("e1", "w1", waiter("e1", {"n": 1}), None, now())).suspended
    assert (await storage.wait("e2", "w1", waiter("e2", {"n": 1}), None, now())).suspended
    assert (await storage.wait("e3", "w1", waiter("e3", None), 0, now())).suspended
    got = await storage.send(EventRecord("v", "p", '{"n": 1}', now()), [], [])
    assert sorted(got.woke) == ["e1", "e2"]  # dict waiters that received it
    other = await storage.send(EventRecord("v2", "p", '{"n": 2}', now()), [], [])
    assert other.woke == []
    page = await storage.events("p", None, 10, None)
    assert {e.id: sorted(e.woke) for e in page.items} == {"v": ["e1", "e2"], "v2": []}
    again = await storage.send(EventRecord("v", "p", '{"n": 1}', now()), [], [])
    assert sorted(again.woke) == ["e1", "e2"]  # a replayed send reports what was stored
    assert await storage.purge_events(None, 0) == 2
    assert (await storage.events(None, None, 10, None)).items == []


def job_event(eid: str, n: int) -> EventRecord:
    return EventRecord(f"job:{eid}", "job:c", f'{{"input":{{"n":{n}}},"output":1}}', now(), eid)


async def test_finish_serves_job_waiters_only_when_they_exist(storage: Storage) -> None:
    await running(storage, "e1", "c1", "c2", "c3")
    assert await storage.awaited("job:") == set()
    # nobody waits on job:c: the completion event is not stored
    assert await storage.finish("c1", "w1", Finish("completed", "1", event=job_event("c1", 1)))
    assert (await storage.events(None, None, 10, None)).items == []
    match = {"input": {"n": 1}}
    w = Waiter("e1", "wait:job:c", "job:c", *shape_and_value(match), now())
    assert (await storage.wait("e1", "w1", w, None, now())).suspended
    assert await storage.awaited("job:") == {"job:c"} and await storage.awaited("x") == set()
    assert await storage.finish("c2", "w1", Finish("completed", "1", event=job_event("c2", 2)))
    assert await storage.finish("c3", "w1", Finish("completed", "1", event=job_event("c3", 1)))
    got = await storage.waiter("e1", "wait:job:c")
    assert got is not None and got.event_id == "job:c3"
    e1 = await storage.get("e1")
    assert e1 is not None and e1.available_at is not None  # woken
    page = await storage.events("job:c", None, 10, None)
    assert {e.id: e.woke for e in page.items} == {"job:c3": ["e1"], "job:c2": []}
    assert await storage.awaited("job:") == set()  # delivered: no open waiter left


async def test_finishes_sent_together_are_each_fenced_and_serve_waiters(storage: Storage) -> None:
    # Many executions of one worker finishing at once (a backend may send them in one
    # call: Redis does): each gets its own answer, a lost one changes nothing, and one
    # whose completion a waiter matches still serves it.
    ids = [f"c{i}" for i in range(8)]
    await running(storage, "e1", *ids)
    w = Waiter("e1", "wait:job:c", "job:c", *shape_and_value({"input": {"n": 5}}), now())
    assert (await storage.wait("e1", "w1", w, None, now())).suspended
    owners = {eid: ("w1" if eid != "c2" else "zombie") for eid in ids}
    done = await asyncio.gather(
        *(
            storage.finish(eid, owners[eid], Finish("completed", str(i), event=job_event(eid, i)))
            for i, eid in enumerate(ids)
        )
    )
    assert done == [eid != "c2" for eid in ids]
    recs = {r.id: r for r in await storage.get_many(ids)}
    assert {eid: r.status for eid, r in recs.items()} == {
        eid: ("running" if eid == "c2" else "completed") for eid in ids
    }
    assert [recs[eid].output for eid in ids if eid != "c2"] == [
        str(i) for i, eid in enumerate(ids) if eid != "c2"
    ]
    got = await storage.waiter("e1", "wait:job:c")
    assert got is not None and got.event_id == "job:c5"
    page = await storage.events("job:c", None, 10, None)
    woke = {e.id: e.woke for e in page.items}
    assert woke.pop("job:c5") == ["e1"]
    assert all(w == [] for w in woke.values()) and "job:c2" not in woke, woke
