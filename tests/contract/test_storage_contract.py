"""The storage contract, run unchanged against every backend (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from qanat.storage import (
    Checkpoint,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    StepRecord,
    Storage,
)
from qanat.storage.base import now

T0 = 1_700_000_000.0  # a fixed past moment: everything created "then" is due now
LEASE = 30.0


def rec(ident: str, job: str = "j", **kw: Any) -> ExecutionRecord:
    kw.setdefault("created_at", T0)
    kw.setdefault("run_at", T0)
    kw.setdefault("available_at", kw["run_at"])
    return ExecutionRecord(id=ident, job=job, input=kw.pop("input", "{}"), **kw)


def step(eid: str, key: str, started: float = T0, **kw: Any) -> StepRecord:
    kw.setdefault("kind", "run")
    kw.setdefault("name", key.split("#")[0])
    kw.setdefault("status", "completed")
    return StepRecord(eid, key, started_at=started, finished_at=started + 1, **kw)


async def claimed(storage: Storage, *recs: ExecutionRecord, owner: str = "w1") -> None:
    """Enqueue and claim these executions for ``owner``."""
    await storage.enqueue(list(recs))
    got = await storage.claim(owner, sorted({r.job for r in recs}), len(recs), LEASE, now())
    assert {r.id for r in got} == {r.id for r in recs}


async def status(storage: Storage, ident: str) -> str:
    got = await storage.get(ident)
    assert got is not None
    return got.status


# --- enqueue ----------------------------------------------------------------------------


async def test_enqueue_stores_and_returns_records(storage: Storage) -> None:
    out = await storage.enqueue([rec("a", input='{"x":1}', priority=3, group="g"), rec("b")])
    assert [r.id for r in out] == ["a", "b"]
    got = await storage.get("a")
    assert got == rec("a", input='{"x":1}', priority=3, group="g")
    assert got is not None and got.pause_requested is False


async def test_enqueue_with_existing_key_returns_existing(storage: Storage) -> None:
    first = await storage.enqueue([rec("a", key="k", input='{"n":1}')])
    again = await storage.enqueue([rec("b", key="k", input='{"n":2}'), rec("c", key="k2")])
    assert again[0].id == "a" and again[0].input == '{"n":1}'
    assert again[1].id == "c"
    assert first[0].id == "a"
    assert await storage.get("b") is None
    # same key in one batch: the second is the first
    both = await storage.enqueue([rec("d", key="kk"), rec("e", key="kk")])
    assert [r.id for r in both] == ["d", "d"]
    # keys are per job
    other = await storage.enqueue([rec("f", job="other", key="k")])
    assert other[0].id == "f"


async def test_existing_key_is_returned_even_when_finished(storage: Storage) -> None:
    await claimed(storage, rec("a", key="k"))
    assert await storage.finish("a", "w1", Finish("completed", output="1"))
    again = await storage.enqueue([rec("b", key="k")])
    assert again[0].id == "a" and again[0].status == "completed"


# --- claim ------------------------------------------------------------------------------


async def test_claim_orders_by_priority_then_oldest(storage: Storage) -> None:
    await storage.enqueue(
        [
            rec("low-old", priority=0, run_at=T0),
            rec("high-new", priority=5, run_at=T0 + 20),
            rec("high-old", priority=5, run_at=T0 + 10),
            rec("low-new", priority=0, run_at=T0 + 30),
            rec("mid", priority=2, run_at=T0 + 40),
        ]
    )
    got = await storage.claim("w", ["j"], 10, LEASE, now())
    assert [r.id for r in got] == ["high-old", "high-new", "mid", "low-old", "low-new"]


async def test_claim_respects_limit_jobs_and_due_time(storage: Storage) -> None:
    at = now()
    await storage.enqueue(
        [
            rec("a1", job="a", run_at=T0),
            rec("a2", job="a", run_at=T0 + 1),
            rec("a3", job="a", run_at=T0 + 2),
            rec("b1", job="b"),
            rec("future", job="a", run_at=at + 10),
        ]
    )
    got = await storage.claim("w", ["a"], 2, LEASE, at)
    assert [r.id for r in got] == ["a1", "a2"]
    got = await storage.claim("w", ["a"], 10, LEASE, at)
    assert [r.id for r in got] == ["a3"]
    assert await storage.claim("w", ["a"], 10, LEASE, at) == []
    assert await storage.claim("w", ["a", "b"], 0, LEASE, at) == []
    got = await storage.claim("w", ["a", "b"], 10, LEASE, at)
    assert [r.id for r in got] == ["b1"]
    got = await storage.claim("w", ["a"], 10, LEASE, at + 10)  # leases still held
    assert [r.id for r in got] == ["future"]


async def test_claim_sets_running_owner_lease_claims_started(storage: Storage) -> None:
    await storage.enqueue([rec("a")])
    at = now()
    (got,) = await storage.claim("w1", ["j"], 1, LEASE, at)
    assert (got.status, got.owner, got.claims, got.started_at) == ("running", "w1", 1, at)
    assert got.available_at == pytest.approx(at + LEASE)
    stored = await storage.get("a")
    assert stored == got


async def test_lapsed_lease_is_reclaimable_by_another_owner(storage: Storage) -> None:
    await storage.enqueue([rec("a")])
    at = now()
    (first,) = await storage.claim("w1", ["j"], 1, LEASE, at)
    assert await storage.claim("w2", ["j"], 1, LEASE, at + 1) == []
    (second,) = await storage.claim("w2", ["j"], 1, LEASE, at + LEASE + 1)
    assert second.owner == "w2" and second.claims == 2
    assert second.started_at == first.started_at  # set once
    assert await storage.renew("w1", ["a"], 100, at) == {"a": "lost"}
    assert not await storage.finish("a", "w1", Finish("completed"))


async def test_claim_fails_past_deadline(storage: Storage) -> None:
    at = now()
    await storage.enqueue(
        [rec("late", deadline=at - 1, priority=9), rec("ok1"), rec("ok2", deadline=at + 60)]
    )
    got = await storage.claim("w", ["j"], 2, LEASE, at)
    assert [r.id for r in got] == ["ok1", "ok2"]
    late = await storage.get("late")
    assert late is not None
    assert (late.status, late.owner, late.available_at, late.completed_at) == (
        "failed",
        None,
        None,
        at,
    )
    assert late.error is not None
    assert json.loads(late.error)["type"] == "Timeout"


async def test_paused_and_finished_are_not_claimed(storage: Storage) -> None:
    await storage.enqueue([rec("p"), rec("c")])
    assert await storage.pause("p") == "paused"
    await claimed(storage, rec("done", job="d"))
    await storage.finish("done", "w1", Finish("completed"))
    assert [r.id for r in await storage.claim("w", ["j", "d"], 10, LEASE, now())] == ["c"]


# --- renew ------------------------------------------------------------------------------


async def test_renew_extends_lease_and_reports_stops(storage: Storage) -> None:
    await claimed(storage, rec("ok"), rec("cancel"), rec("pause"), rec("other"), rec("done"))
    await storage.cancel(["cancel"], "stop")
    assert await storage.pause("pause") == "running"
    await storage.finish("done", "w1", Finish("completed"))
    await storage.release("w1", ["other"])
    await storage.claim("w2", ["j"], 1, LEASE, now())
    at = now()
    until = at + 1000
    stops = await storage.renew(
        "w1", ["ok", "cancel", "pause", "other", "done", "missing"], 1000, at
    )
    assert stops == {
        "cancel": "cancelled",
        "pause": "paused",
        "other": "lost",
        "done": "lost",
        "missing": "lost",
    }
    ok = await storage.get("ok")
    assert ok is not None and ok.available_at == pytest.approx(until)
    assert await storage.renew("w1", ["ok"], 1001, at) == {}


# --- checkpoint -------------------------------------------------------------------------


async def test_checkpoint_stores_and_replaces_step_and_enqueues_children(
    storage: Storage,
) -> None:
    await claimed(storage, rec("p"))
    child = rec("c1", parent_id="p", key="p:child")
    assert await storage.checkpoint("p", "w1", Checkpoint(step("p", "a"), [child])) is None
    assert await storage.checkpoint("p", "w1", Checkpoint(step("p", "b", T0 + 1))) is None
    replaced = step("p", "a", result='"new"', attempts=2)
    assert await storage.checkpoint("p", "w1", Checkpoint(replaced)) is None
    steps = await storage.steps("p")
    assert [(s.key, s.result, s.attempts) for s in steps] == [("a", '"new"', 2), ("b", None, 1)]
    stored_child = await storage.get("c1")
    assert stored_child is not None and stored_child.parent_id == "p"
    # a replayed checkpoint does not start a second child
    again = rec("c2", parent_id="p", key="p:child")
    assert await storage.checkpoint("p", "w1", Checkpoint(step("p", "a"), [again])) is None
    assert await storage.get("c2") is None


async def test_a_repeated_checkpoint_stores_each_unkeyed_child_once(storage: Storage) -> None:
    """A checkpoint retried after a fault that hid whether it committed (a database
    restart) is safe: children already stored under their ids are kept as they are,
    alone or in a group commit of several checkpoints (the bulk path)."""
    await claimed(storage, rec("p"), rec("q"))

    def kids(parent: str, n: int) -> list[ExecutionRecord]:
        return [rec(f"{parent}-k{i}", job="kid", parent_id=parent) for i in range(n)]

    assert await storage.checkpoint("p", "w1", Checkpoint(step("p", "a"), kids("p", 2))) is None
    got = await storage.claim("w2", ["kid"], 1, LEASE, now())
    assert [g.id for g in got] == ["p-k0"]
    assert await storage.checkpoint("p", "w1", Checkpoint(step("p", "a"), kids("p", 2))) is None
    # several at once (one group commit where the backend batches them), each twice
    for _ in range(2):
        whys = await asyncio.gather(
            storage.checkpoint("q", "w1", Checkpoint(step("q", "a"), kids("q", 3))),
            storage.checkpoint("q", "w1", Checkpoint(step("q", "b"), kids("qb", 1))),
        )
        assert whys == [None, None]
    page = await storage.query(ExecutionFilter(job=["kid"]), 100, None)
    assert sorted(e.id for e in page.items) == ["p-k0", "p-k1", "q-k0", "q-k1", "q-k2", "qb-k0"]
    first = await storage.get("p-k0")
    assert first is not None and (first.status, first.owner) == ("running", "w2")


async def test_checkpoint_refused_for_wrong_owner_or_cancelled(storage: Storage) -> None:
    await claimed(storage, rec("p"), rec("x"))
    why = await storage.checkpoint("p", "intruder", Checkpoint(step("p", "a"), [rec("c")]))
    assert why == "lost"
    assert await storage.steps("p") == []
    assert await storage.get("c") is None
    await storage.cancel(["x"], None)
    assert await storage.checkpoint("x", "w1", Checkpoint(step("x", "a"))) == "cancelled"
    assert await storage.steps("x") == []
    assert await storage.checkpoint("nope", "w1", Checkpoint(step("nope", "a"))) == "lost"


async def test_checkpoint_reports_pause_after_storing(storage: Storage) -> None:
    await claimed(storage, rec("p"))
    assert await storage.pause("p") == "running"
    assert await storage.checkpoint("p", "w1", Checkpoint(step("p", "a"))) == "paused"
    assert [s.key for s in await storage.steps("p")] == ["a"]


# --- finish -----------------------------------------------------------------------------


async def test_finish_final(storage: Storage) -> None:
    await claimed(storage, rec("a"))
    before = now()
    assert await storage.finish("a", "w1", Finish("completed", output='"out"'))
    got = await storage.get("a")
    assert got is not None
    assert (got.status, got.output, got.owner, got.available_at) == (
        "completed",
        '"out"',
        None,
        None,
    )
    assert got.completed_at is not None and got.completed_at >= before
    assert not await storage.finish("a", "w1", Finish("failed"))


async def test_finish_failed_and_cancelled_record_error_and_reason(storage: Storage) -> None:
    await claimed(storage, rec("f"), rec("c"))
    assert await storage.finish("f", "w1", Finish("failed", error='{"type":"E"}'))
    assert await storage.finish("c", "w1", Finish("cancelled", reason="bye"))
    f, c = await storage.get("f"), await storage.get("c")
    assert f is not None and (f.status, f.error) == ("failed", '{"type":"E"}')
    assert c is not None and (c.status, c.reason) == ("cancelled", "bye")


async def test_finish_retry_goes_back_to_pending(storage: Storage) -> None:
    await claimed(storage, rec("a"), rec("b"))
    due = now() + 60
    assert await storage.finish("a", "w1", Finish("pending", error='"boom"', available_at=due))
    got = await storage.get("a")
    assert got is not None
    assert (got.status, got.owner, got.attempt, got.error) == ("pending", None, 2, '"boom"')
    assert got.available_at == pytest.approx(due) and got.run_at == pytest.approx(due)
    assert await storage.claim("w1", ["j"], 1, LEASE, now()) == []
    assert await storage.finish("b", "w1", Finish("pending", attempt=5))
    got = await storage.get("b")
    assert got is not None and got.attempt == 5
    assert got.available_at is not None and got.available_at <= now()


async def test_finish_refused_for_wrong_owner(storage: Storage) -> None:
    await claimed(storage, rec("a"))
    assert not await storage.finish("a", "w2", Finish("completed"))
    assert not await storage.finish("missing", "w1", Finish("completed"))
    assert await status(storage, "a") == "running"


async def test_finishing_a_child_wakes_its_waiting_parent(storage: Storage) -> None:
    await claimed(storage, rec("parent"), rec("busy"))
    children = [rec("c1", parent_id="parent"), rec("c2", parent_id="busy")]
    await storage.checkpoint("parent", "w1", Checkpoint(step("parent", "s"), children[:1]))
    await storage.checkpoint("busy", "w1", Checkpoint(step("busy", "s"), children[1:]))
    assert await storage.suspend("parent", "w1", "waiting", None)
    got = await storage.claim("w2", ["j"], 10, LEASE, now())
    assert {r.id for r in got} == {"c1", "c2"}
    before = now()
    assert await storage.finish("c1", "w2", Finish("completed"))
    assert await storage.finish("c2", "w2", Finish("completed"))
    parent = await storage.get("parent")
    assert parent is not None and parent.status == "waiting"
    assert parent.available_at is not None and before <= parent.available_at <= now()
    busy = await storage.get("busy")  # running parent: its lease is untouched
    assert busy is not None and busy.available_at is not None
    assert busy.available_at > now() + LEASE / 2


async def test_child_finish_keeps_an_earlier_parent_wake_up(storage: Storage) -> None:
    await claimed(storage, rec("parent"))
    child = rec("c", job="child", parent_id="parent")
    await storage.checkpoint("parent", "w1", Checkpoint(step("parent", "s"), [child]))
    assert await storage.suspend("parent", "w1", "waiting", T0)
    assert [r.id for r in await storage.claim("w2", ["child"], 10, LEASE, now())] == ["c"]
    assert await storage.finish("c", "w2", Finish("completed"))
    parent = await storage.get("parent")
    assert parent is not None and parent.available_at == T0


# --- suspend / release ------------------------------------------------------------------


async def test_suspend_waiting_and_paused(storage: Storage) -> None:
    await claimed(storage, rec("w"), rec("p"), rec("req"))
    wake_at = now() + 3600
    assert await storage.suspend("w", "w1", "waiting", wake_at)
    got = await storage.get("w")
    assert got is not None
    assert (got.status, got.owner, got.available_at) == ("waiting", None, wake_at)
    assert await storage.suspend("p", "w1", "paused", None)
    got = await storage.get("p")
    assert got is not None and (got.status, got.owner, got.available_at) == ("paused", None, None)
    # a pending pause request turns waiting into paused
    assert await storage.pause("req") == "running"
    assert await storage.suspend("req", "w1", "waiting", wake_at)
    got = await storage.get("req")
    assert got is not None
    assert (got.status, got.available_at, got.pause_requested) == ("paused", None, False)
    # no longer owned: refused
    assert not await storage.suspend("w", "w1", "waiting", wake_at)


async def test_release_gives_executions_back(storage: Storage) -> None:
    await claimed(storage, rec("a"), rec("b"))
    await storage.release("w2", ["b"])  # not its owner: ignored
    await storage.release("w1", ["a"])
    got = await storage.get("a")
    assert got is not None and (got.status, got.owner) == ("pending", None)
    assert got.available_at is not None and got.available_at <= now()
    assert await status(storage, "b") == "running"
    again = await storage.claim("w2", ["j"], 10, LEASE, now())
    assert [r.id for r in again] == ["a"]


# --- control ----------------------------------------------------------------------------


async def test_cancel_cascades_to_live_descendants(storage: Storage) -> None:
    await claimed(storage, rec("root", job="r"))
    kids = [rec("kid", job="k", parent_id="root"), rec("done-kid", job="d", parent_id="root")]
    await storage.checkpoint("root", "w1", Checkpoint(step("root", "s"), kids))
    await storage.enqueue([rec("grandkid", job="k", parent_id="kid"), rec("other", job="k")])
    assert [r.id for r in await storage.claim("w2", ["d"], 10, LEASE, now())] == ["done-kid"]
    assert await storage.finish("done-kid", "w2", Finish("completed"))

    out = await storage.cancel(["root"], "user asked")
    assert {r.id for r in out} == {"root", "kid", "grandkid"}
    assert {r.id: r.status for r in out} == {
        "root": "running",
        "kid": "pending",
        "grandkid": "pending",
    }  # the records as they were before
    for ident in ("root", "kid", "grandkid"):
        got = await storage.get(ident)
        assert got is not None
        assert (got.status, got.reason, got.available_at) == ("cancelled", "user asked", None)
        assert got.completed_at is not None
    assert await status(storage, "done-kid") == "completed"
    assert await status(storage, "other") == "pending"
    root = await storage.get("root")
    assert root is not None and root.owner == "w1"  # the owner notices through renew
    assert await storage.renew("w1", ["root"], 10) == {"root": "cancelled"}
    assert not await storage.finish("root", "w1", Finish("completed"))
    assert await storage.cancel(["root", "missing"], None) == []
    assert await storage.claim("w3", ["k", "r"], 10, LEASE, now()) != []  # only "other"
    assert await status(storage, "other") == "running"


async def test_cancelling_a_child_wakes_its_waiting_parent(storage: Storage) -> None:
    await claimed(storage, rec("parent"))
    child = rec("c", parent_id="parent")
    await storage.checkpoint("parent", "w1", Checkpoint(step("parent", "s"), [child]))
    assert await storage.suspend("parent", "w1", "waiting", None)
    assert [r.id for r in await storage.cancel(["c"], None)] == ["c"]
    parent = await storage.get("parent")
    assert parent is not None and parent.available_at is not None


async def test_pause_and_resume_pending(storage: Storage) -> None:
    await storage.enqueue([rec("a")])
    assert await storage.pause("a") == "paused"
    got = await storage.get("a")
    assert got is not None and got.available_at is None
    assert await storage.claim("w", ["j"], 1, LEASE, now()) == []
    before = now()
    assert await storage.resume("a") == "pending"
    got = await storage.get("a")
    assert got is not None and got.available_at is not None and got.available_at >= before
    assert [r.id for r in await storage.claim("w", ["j"], 1, LEASE, now())] == ["a"]
    assert await storage.pause("missing") is None
    assert await storage.resume("missing") is None


async def test_pause_and_resume_running(storage: Storage) -> None:
    await claimed(storage, rec("a"))
    assert await storage.pause("a") == "running"
    got = await storage.get("a")
    assert got is not None and got.pause_requested is True
    assert await storage.resume("a") == "running"
    got = await storage.get("a")
    assert got is not None and got.pause_requested is False
    assert await storage.renew("w1", ["a"], 10) == {}


async def test_pause_suspended_waiting_and_finished(storage: Storage) -> None:
    await claimed(storage, rec("w"), rec("d"))
    await storage.suspend("w", "w1", "waiting", now() + 100)
    assert await storage.pause("w") == "paused"
    got = await storage.get("w")
    assert got is not None and got.available_at is None
    await storage.finish("d", "w1", Finish("completed"))
    assert await storage.pause("d") == "completed"
    assert await storage.resume("d") == "completed"


async def test_restart_resets_and_deletes_steps_and_logs(storage: Storage) -> None:
    await claimed(storage, rec("a"), rec("ok"))
    await storage.checkpoint("a", "w1", Checkpoint(step("a", "s")))
    await storage.append_logs("w1", [LogRecord("a", T0, "hello")])
    await storage.set_progress("a", "w1", '{"pct":50}')
    await storage.finish("a", "w1", Finish("pending", error='"e"'))
    await storage.claim("w1", ["j"], 1, LEASE, now())
    await storage.finish("a", "w1", Finish("failed", error='"e"'))
    at = now()
    got = await storage.restart("a", at)
    assert got is not None
    assert (got.status, got.attempt, got.owner, got.claims) == ("pending", 1, None, 0)
    assert (got.output, got.error, got.reason, got.progress) == (None, None, None, None)
    assert (got.started_at, got.completed_at, got.available_at, got.run_at) == (None, None, at, at)
    assert await storage.get("a") == got
    assert await storage.steps("a") == []
    assert await storage.logs("a") == []
    await storage.finish("ok", "w1", Finish("completed"))
    assert await storage.restart("ok", at) is None
    assert await storage.restart("missing", at) is None


async def test_wake_makes_suspended_waiting_due(storage: Storage) -> None:
    await claimed(storage, rec("w"), rec("running"))
    await storage.suspend("w", "w1", "waiting", now() + 3600)
    await storage.enqueue([rec("p")])
    at = now()
    await storage.wake(["w", "running", "p", "missing"], at)
    w = await storage.get("w")
    assert w is not None and w.available_at == at
    running = await storage.get("running")
    assert running is not None and running.available_at != at
    p = await storage.get("p")
    assert p is not None and p.available_at == T0
    got = await storage.claim("w2", ["j"], 10, LEASE, at)
    assert sorted(r.id for r in got) == ["p", "w"]


# --- reading ----------------------------------------------------------------------------


async def test_get_and_get_many(storage: Storage) -> None:
    await storage.enqueue([rec("a"), rec("b"), rec("c")])
    assert await storage.get("missing") is None
    got = await storage.get_many(["c", "missing", "a"])
    assert sorted(r.id for r in got) == ["a", "c"]
    assert await storage.get_many([]) == []


async def test_list_pages_newest_first_without_overlap(storage: Storage) -> None:
    # pairs share a created_at so the id breaks the tie
    await storage.enqueue([rec(f"e{i:02d}", created_at=T0 + i // 2) for i in range(25)])
    seen: list[str] = []
    sizes = []
    cursor = None
    while True:
        page = await storage.query(ExecutionFilter(), 10, cursor)
        sizes.append(len(page.items))
        seen.extend(r.id for r in page.items)
        cursor = page.cursor
        if cursor is None:
            break
    assert sizes == [10, 10, 5]
    assert seen == [f"e{i:02d}" for i in reversed(range(25))]


async def test_list_exact_page_has_no_next_cursor(storage: Storage) -> None:
    await storage.enqueue([rec(f"e{i}", created_at=T0 + i) for i in range(10)])
    page = await storage.query(ExecutionFilter(), 10, None)
    assert len(page.items) == 10 and page.cursor is None
    with pytest.raises(ValueError):
        await storage.query(ExecutionFilter(), 10, "not-a-cursor")


async def test_list_filters(storage: Storage) -> None:
    await storage.enqueue(
        [
            rec("a", job="x", group="g1", created_at=T0 + 1),
            rec("b", job="y", group="g1", created_at=T0 + 2),
            rec("c", job="x", created_at=T0 + 3, parent_id="a"),
            rec("d", job="z", created_at=T0 + 4),
        ]
    )
    t_start = now()
    await claimed(storage, rec("started", job="s", created_at=T0 + 5))
    await storage.finish("started", "w1", Finish("pending"))  # attempt 2
    await storage.claim("w1", ["s"], 1, LEASE, now())
    await storage.finish("started", "w1", Finish("completed"))
    t_end = now()

    async def ids(**kw: Any) -> list[str]:
        page = await storage.query(ExecutionFilter(**kw), 100, None)
        return [r.id for r in page.items]

    assert await ids() == ["started", "d", "c", "b", "a"]
    assert await ids(ids=["a", "d", "zz"]) == ["d", "a"]
    assert await ids(ids=[]) == []
    assert await ids(job=["x"]) == ["c", "a"]
    assert await ids(job=["x", "z"]) == ["d", "c", "a"]
    assert await ids(status=["completed"]) == ["started"]
    assert await ids(status=["pending", "completed"]) == ["started", "d", "c", "b", "a"]
    assert await ids(group="g1") == ["b", "a"]
    assert await ids(parent_id="a") == ["c"]
    assert await ids(started_after=t_start - 1) == ["started"]
    assert await ids(started_after=t_end + 1) == []
    assert await ids(started_before=t_end + 1) == ["started"]
    assert await ids(started_before=t_start - 1) == []
    assert await ids(completed_after=t_start - 1) == ["started"]
    assert await ids(completed_before=t_start - 1) == []
    assert await ids(completed_before=t_end + 1) == ["started"]
    assert await ids(attempts=2) == ["started"]
    assert await ids(attempts_gt=1) == ["started"]
    assert await ids(attempts_lt=2) == ["d", "c", "b", "a"]
    assert await ids(job=["x"], group="g1") == ["a"]


async def test_find_cached(storage: Storage) -> None:
    await claimed(storage, rec("old", job="c", input='{"n":1}'))
    await storage.finish("old", "w1", Finish("completed", output="1"))
    mid = now()
    await claimed(
        storage,
        rec("new", job="c", input='{"n":1}'),
        rec("other", job="c", input='{"n":2}'),
        rec("failed", job="c", input='{"n":3}'),
    )
    await storage.finish("new", "w1", Finish("completed", output="2"))
    await storage.finish("other", "w1", Finish("completed", output="3"))
    await storage.finish("failed", "w1", Finish("failed"))
    hit = await storage.find_cached("c", '{"n":1}', 0.0)
    assert hit is not None and hit.id == "new"
    hit = await storage.find_cached("c", '{"n":1}', mid)
    assert hit is not None and hit.id == "new"
    assert await storage.find_cached("c", '{"n":1}', now() + 10) is None
    assert await storage.find_cached("c", '{"n":3}', 0.0) is None
    assert await storage.find_cached("other-job", '{"n":1}', 0.0) is None


async def test_steps_in_start_order(storage: Storage) -> None:
    await claimed(storage, rec("a"))
    for key, started in (("late", T0 + 5), ("early", T0 + 1), ("mid", T0 + 3)):
        await storage.checkpoint("a", "w1", Checkpoint(step("a", key, started)))
    assert [s.key for s in await storage.steps("a")] == ["early", "mid", "late"]
    got = (await storage.steps("a"))[0]
    assert got == step("a", "early", T0 + 1)
    assert await storage.steps("missing") == []


async def test_stats(storage: Storage) -> None:
    empty = await storage.stats()
    assert set(empty.by_status) >= {"pending", "running", "completed", "failed"}
    assert sum(empty.by_status.values()) == 0
    assert (empty.retries, empty.mean_runtime, empty.p95_runtime) == (0, None, None)
    await storage.enqueue([rec("p1", job="x"), rec("p2", job="y")])
    await claimed(storage, rec("r", job="z"), rec("f", job="z"))
    await storage.finish("r", "w1", Finish("pending"))
    await storage.claim("w1", ["z"], 1, LEASE, now())
    await storage.finish("r", "w1", Finish("completed"))
    await storage.finish("f", "w1", Finish("failed"))
    st = await storage.stats()
    assert st.by_status["pending"] == 2
    assert st.by_status["completed"] == 1 and st.by_status["failed"] == 1
    assert st.by_status["running"] == 0
    assert st.by_job == {
        "x": {"pending": 1},
        "y": {"pending": 1},
        "z": {"completed": 1, "failed": 1},
    }
    assert st.retries == 1
    r = await storage.get("r")
    assert r is not None and r.completed_at is not None and r.started_at is not None
    assert st.mean_runtime == pytest.approx(r.completed_at - r.started_at)
    assert st.p95_runtime == pytest.approx(r.completed_at - r.started_at)


async def test_progress(storage: Storage) -> None:
    await claimed(storage, rec("a"))
    assert await storage.set_progress("a", "w1", '{"pct":10}')
    assert await storage.set_progress("a", "w1", '{"pct":20,"message":"m"}')
    assert not await storage.set_progress("missing", None, '{"pct":1}')
    got = await storage.get("a")
    assert got is not None and got.progress == '{"pct":20,"message":"m"}'


async def test_logs_in_order(storage: Storage) -> None:
    await storage.enqueue([rec("a"), rec("b")])
    lines = [
        LogRecord("a", T0 + 2, "first", '{"k":1}', "s1"),
        LogRecord("b", T0, "other"),
        LogRecord("a", T0 + 1, "second"),
    ]
    assert await storage.append_logs(None, lines[:2]) == 2  # None: not a worker's write
    assert await storage.append_logs(None, lines[2:]) == 1
    assert await storage.logs("a") == [lines[0], lines[2]]
    assert await storage.logs("b") == [lines[1]]
    assert await storage.logs("missing") == []


# --- housekeeping -----------------------------------------------------------------------


async def test_workers_register_unregister_and_expire_owner(storage: Storage) -> None:
    await storage.register_worker("w1", "host-a", 11, now())
    await storage.register_worker("w2", "host-a", 12, now())
    await storage.register_worker("w3", "host-b", 13, now())
    assert sorted(await storage.workers("host-a")) == [("w1", 11), ("w2", 12)]
    await storage.unregister_worker("w2")
    assert await storage.workers("host-a") == [("w1", 11)]
    await claimed(storage, rec("a"), rec("b"), rec("c"))
    await storage.suspend("c", "w1", "waiting", now() + 3600)  # not owned any more
    at = now()
    assert await storage.expire_owner("w1", at) == 2
    assert await storage.workers("host-a") == []
    got = await storage.claim("w9", ["j"], 10, LEASE, at)
    assert sorted(r.id for r in got) == ["a", "b"]
    assert await storage.workers("host-b") == [("w3", 13)]


async def test_purge_by_age_and_keep_with_steps_and_logs(storage: Storage) -> None:
    ids = [f"e{i}" for i in range(6)]
    await claimed(storage, *[rec(i, key=f"k{i}") for i in ids])
    for i in ids:
        await storage.checkpoint(i, "w1", Checkpoint(step(i, "s")))
        await storage.append_logs("w1", [LogRecord(i, T0, "line")])
    for i in ids[:5]:
        await storage.finish(i, "w1", Finish("completed"))
    await storage.finish(ids[5], "w1", Finish("failed"))
    completed = {i: (await storage.get(i)).completed_at for i in ids[:5]}  # type: ignore[union-attr]
    cut = completed["e2"]
    assert cut is not None
    # by age: e0, e1 completed strictly before e2
    assert await storage.purge("completed", cut, None) == 2
    assert await storage.get_many(["e0", "e1"]) == []
    assert await storage.steps("e0") == [] and await storage.logs("e1") == []
    # by count: keep the newest 1 of e2, e3, e4
    assert await storage.purge("completed", None, 1) == 2
    left = await storage.query(ExecutionFilter(status=["completed"]), 10, None)
    assert [r.id for r in left.items] == ["e4"]
    assert await storage.steps("e2") == [] and await storage.logs("e3") == []
    assert [s.key for s in await storage.steps("e4")] == ["s"]
    assert await status(storage, "e5") == "failed"  # another status: untouched
    assert len(await storage.logs("e5")) == 1
    # a purged key can be used again
    again = await storage.enqueue([rec("new", key="k0")])
    assert again[0].id == "new"
    assert await storage.purge("completed", None, None) == 0
