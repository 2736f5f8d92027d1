"""The reads the dashboard needs, on every backend: the ``search`` filter, the list of
workers with what they hold (``worker_list``) and the open waiters (``open_waiters``)."""

from __future__ import annotations

from test_storage_contract import LEASE, rec
from test_waiters_contract import waiter

from qanat.storage import EventRecord, Storage
from qanat.storage.base import ExecutionFilter, now
from qanat.storage.matching import match_of, shape_and_value


async def test_search_matches_an_id_or_text_of_the_input(storage: Storage) -> None:
    await storage.enqueue(
        [
            rec("a1", input='{"name": "alpha 50%_off"}', created_at=1.0),
            rec("b2", input='{"name": "beta"}', created_at=2.0),
            rec("c3", input='{"ref": "a1"}', created_at=3.0),
        ]
    )

    async def ids(text: str, **kw: object) -> list[str]:
        page = await storage.query(ExecutionFilter(search=text, **kw), 10, None)  # type: ignore[arg-type]
        return [r.id for r in page.items]

    assert await ids("alpha") == ["a1"]
    assert await ids("b2") == ["b2"]  # by id
    assert await ids("a1") == ["c3", "a1"]  # its id, and another's input naming it
    assert await ids("50%_") == ["a1"]  # LIKE wildcards are literal text
    assert await ids("%") == ["a1"] and await ids("_") == ["a1"]
    assert await ids("nothing") == []
    assert await ids("a", job=["other"]) == []  # combined with the other filters (AND)


async def test_worker_list_with_held_executions(storage: Storage) -> None:
    t = now()
    await storage.register_worker("w1", "host-a", 11, t)
    await storage.register_worker("w2", "host-b", 22, t + 1)
    await storage.enqueue(
        [rec("e1", run_at=t - 10), rec("e2", run_at=t - 10), rec("e3", run_at=t - 5)]
    )
    got = await storage.claim("w1", ["j"], 2, LEASE, t)
    assert {g.id for g in got} == {"e1", "e2"}
    workers = {w.id: w for w in await storage.worker_list()}
    assert set(workers) == {"w1", "w2"}
    w1, w2 = workers["w1"], workers["w2"]
    assert (w1.host, w1.pid) == ("host-a", 11)
    assert abs(w1.registered_at - t) < 5  # a node stamps registration with its own clock
    assert sorted(w1.held) == ["e1", "e2"] and w1.lease_until == t + LEASE
    assert (w2.host, w2.pid, w2.held, w2.lease_until) == ("host-b", 22, [], None)
    await storage.renew("w1", ["e1"], LEASE, t + 5)
    assert (await storage.worker_list())[0].lease_until == t + 5 + LEASE
    await storage.unregister_worker("w2")
    assert [w.id for w in await storage.worker_list()] == ["w1"]


async def test_open_waiters_lists_who_waits_on_what(storage: Storage) -> None:
    await storage.enqueue([rec(i, run_at=now() - 1) for i in ("e1", "e2", "e3")])
    await storage.claim("w1", ["j"], 10, LEASE, now())
    await storage.wait("e1", "w1", waiter("e1", {"order": {"id": 1}}), None, now())
    await storage.wait("e2", "w1", waiter("e2", None), 0, now())
    assert [w.execution_id for w in await storage.open_waiters(None, 10)] == ["e1", "e2"]
    assert [w.execution_id for w in await storage.open_waiters("p", 1)] == ["e1"]
    assert await storage.open_waiters("other", 10) == []
    first = (await storage.open_waiters("p", 10))[0]
    assert first.shape is not None and first.value is not None
    assert match_of(first.shape, first.value) == {"order": {"id": 1}}
    # a delivered waiter is no longer open
    await storage.send(EventRecord("ev", "p", '{"order": {"id": 1}}', now()), [], [])
    assert [w.execution_id for w in await storage.open_waiters(None, 10)] == ["e2"]


def test_match_of_undoes_shape_and_value() -> None:
    for match in ({"a": 1}, {"b": {"y": [1, 2], "x": None}, "a": "s"}, {}):
        assert match_of(*shape_and_value(match)) == match


async def test_count_and_status_counts(storage: Storage) -> None:
    await storage.enqueue(
        [rec(f"a{i}", job="a", group="g" if i % 2 else None) for i in range(5)]
        + [rec("b1", job="b")]
    )
    assert await storage.count(ExecutionFilter()) == 6
    assert await storage.count(ExecutionFilter(job=["a"], group="g")) == 2
    assert await storage.count(ExecutionFilter(status=["failed"])) == 0
    assert await storage.count(ExecutionFilter(search="b1")) == 1
    assert await storage.status_counts() == {"a": {"pending": 5}, "b": {"pending": 1}}


async def test_time_ranges_find_rows_whatever_their_creation_time(storage: Storage) -> None:
    # SQL bounds created_at by started_before/completed_before (a created row starts
    # later); a created_at a little after started_at (clock estimates) is still found.
    await storage.enqueue(
        [
            rec("old", created_at=100.0, run_at=100.0, started_at=150.0, completed_at=160.0),
            rec("skew", created_at=205.0, run_at=205.0, started_at=200.0, completed_at=210.0),
            rec("new", created_at=900.0, run_at=900.0, started_at=950.0, completed_at=960.0),
        ]
    )

    async def ids(**kw: float) -> list[str]:
        return [r.id for r in (await storage.query(ExecutionFilter(**kw), 10, None)).items]

    assert await ids(started_before=201.0) == ["skew", "old"]
    assert await ids(started_after=140.0, started_before=500.0) == ["skew", "old"]
    assert await ids(completed_before=211.0) == ["skew", "old"]
    assert await ids(completed_after=500.0) == ["new"]
