"""Flow control in storage, run unchanged against every backend (see conftest.py).

Every decision takes its time from the records (``created_at`` for admission) or the
claim's ``at``, so these tests run on a fixed clock.
"""

from __future__ import annotations

import json
from typing import Any

from qanat.storage import ExecutionFilter, ExecutionRecord, Finish, Storage
from qanat.storage.base import now
from qanat.storage.flow import FlowSpec, gate_id

T0 = 1_700_000_000.0
LEASE = 30.0
W = gate_id("j", "window", None)


def rec(ident: str, spec: FlowSpec, at: float = T0, **kw: Any) -> ExecutionRecord:
    kw.setdefault("run_at", at)
    kw.setdefault("available_at", kw["run_at"])
    return ExecutionRecord(
        id=ident,
        job="j",
        input=kw.pop("input", "{}"),
        created_at=at,
        flow=spec.dump(),
        **kw,
    )


async def claim_ids(
    storage: Storage, at: float, owner: str = "w1", lease: float = LEASE
) -> list[str]:
    return [r.id for r in await storage.claim(owner, ["j"], 10, lease, at)]


async def status(storage: Storage, ident: str) -> tuple[str, str | None]:
    r = await storage.get(ident)
    assert r is not None
    return r.status, r.reason


# --- concurrency window -----------------------------------------------------------------


async def test_window_limits_running_and_parks_the_rest(storage: Storage) -> None:
    spec = FlowSpec(window=(W, 2))
    await storage.enqueue([rec(f"e{i}", spec) for i in range(4)])
    assert await claim_ids(storage, T0 + 1) == ["e0", "e1"]
    assert await status(storage, "e2") == ("pending", "concurrency")
    assert await claim_ids(storage, T0 + 2) == []
    assert await storage.finish("e0", "w1", Finish("completed", output="1"))
    assert await claim_ids(storage, T0 + 3) == ["e2"]
    assert await status(storage, "e3") == ("pending", "concurrency")


async def test_window_is_per_key(storage: Storage) -> None:
    a = FlowSpec(window=(gate_id("j", "window", "a"), 1))
    b = FlowSpec(window=(gate_id("j", "window", "b"), 1))
    await storage.enqueue([rec("a1", a), rec("a2", a), rec("b1", b), rec("b2", b)])
    assert sorted(await claim_ids(storage, T0 + 1)) == ["a1", "b1"]


async def test_every_way_out_of_running_frees_the_slot(storage: Storage) -> None:
    spec = FlowSpec(window=(W, 1))
    await storage.enqueue([rec(f"e{i}", spec) for i in range(6)])
    assert await claim_ids(storage, T0 + 1) == ["e0"]
    # a retry gives the slot back
    assert await storage.finish("e0", "w1", Finish("pending", attempt=2, available_at=T0 + 99))
    assert await claim_ids(storage, T0 + 2) == ["e1"]
    # suspending (a long sleep) gives it back
    assert await storage.suspend("e1", "w1", "waiting", T0 + 99)
    assert await claim_ids(storage, T0 + 3) == ["e2"]
    # a cancel gives it back
    await storage.cancel(["e2"], "test")
    assert await claim_ids(storage, T0 + 4) == ["e3"]
    # graceful release gives it back (and the released one competes again)
    await storage.release("w1", ["e3"])
    got = await claim_ids(storage, T0 + 5)
    assert len(got) == 1


async def test_waiting_in_memory_holds_no_slot_and_must_take_one_back(storage: Storage) -> None:
    spec = FlowSpec(window=(W, 1))
    await storage.enqueue([rec("e0", spec), rec("e1", spec)])
    assert await claim_ids(storage, T0 + 1) == ["e0"]
    assert await storage.mark("e0", "w1", "waiting")  # e0 waits on a child: slot free
    assert await claim_ids(storage, T0 + 2) == ["e1"]
    assert not await storage.mark("e0", "w1", "running")  # full: e0 must wait its turn
    assert await storage.finish("e1", "w1", Finish("completed", output="1"))
    assert await storage.mark("e0", "w1", "running")


async def test_a_lapsed_lease_is_reclaimed_without_a_second_slot(storage: Storage) -> None:
    spec = FlowSpec(window=(W, 1))
    await storage.enqueue([rec("e0", spec), rec("e1", spec)])
    assert await claim_ids(storage, T0 + 1) == ["e0"]
    # w1 died: its lease ran out; w2 takes over e0, and e1 still may not start
    assert await claim_ids(storage, T0 + 1 + LEASE + 1, owner="w2") == ["e0"]
    assert await status(storage, "e1") == ("pending", "concurrency")


async def test_paused_parked_execution_resumes_through_the_gate(storage: Storage) -> None:
    spec = FlowSpec(window=(W, 1))
    await storage.enqueue([rec("e0", spec), rec("e1", spec)])
    assert await claim_ids(storage, T0 + 1) == ["e0"]
    assert await storage.pause("e1") == "paused"
    assert await storage.finish("e0", "w1", Finish("completed", output="1"))
    assert await claim_ids(storage, T0 + 2) == []  # paused: not unparked by the free slot
    assert await storage.resume("e1") == "pending"  # due at the real now
    assert await claim_ids(storage, now() + 1) == ["e1"]


# --- rolling windows and throttle queue -----------------------------------------------------


async def test_rolling_window_counts_first_starts(storage: Storage) -> None:
    g = gate_id("j", "rolling", None)
    spec = FlowSpec(rolling=[(g, 2, 100.0)])
    await storage.enqueue([rec(f"e{i}", spec) for i in range(5)])
    assert await claim_ids(storage, T0 + 1) == ["e0", "e1"]
    assert await status(storage, "e2") == ("pending", "rolling")
    assert storage.next_wake == T0 + 101  # when the first starts leave the window
    # w1 died; w2 takes e0 and e1 over: not new starts, so e2 still waits
    reclaimed = await claim_ids(storage, T0 + 1 + LEASE + 1, owner="w2", lease=1000)
    assert sorted(reclaimed) == ["e0", "e1"]
    assert await status(storage, "e2") == ("pending", "rolling")
    assert await claim_ids(storage, T0 + 100.5) == []
    assert await claim_ids(storage, T0 + 101.01) == ["e2", "e3"]
    assert await status(storage, "e4") == ("pending", "rolling")


async def test_throttle_queue_spaces_starts(storage: Storage) -> None:
    g = gate_id("j", "throttle", None)
    spec = FlowSpec(rolling=[(g, 1, 5.0)])
    await storage.enqueue([rec(f"e{i}", spec) for i in range(3)])
    assert await claim_ids(storage, T0) == ["e0"]
    assert await status(storage, "e1") == ("pending", "throttle")
    assert await claim_ids(storage, T0 + 4.9) == []
    assert await claim_ids(storage, T0 + 5.01) == ["e1"]
    assert await claim_ids(storage, T0 + 6) == []
    assert await claim_ids(storage, T0 + 10.02) == ["e2"]


async def test_refill_unparks_what_an_open_window_allows(storage: Storage) -> None:
    g = gate_id("j", "rolling", None)
    spec = FlowSpec(rolling=[(g, 1, 5.0)])
    await storage.enqueue([rec("e0", spec), rec("e1", spec)])
    assert await claim_ids(storage, T0) == ["e0"]
    assert await storage.refill(T0 + 1) == 0  # window still closed
    assert await storage.refill(T0 + 6) == 1
    assert await status(storage, "e1") == ("pending", None)


# --- decided at enqueue ------------------------------------------------------------------


async def test_rate_limit_drops_excess_triggers(storage: Storage) -> None:
    spec = FlowSpec(rate=(gate_id("j", "rate", None), 2, 60.0))
    stored = await storage.enqueue(
        [rec("e0", spec, T0), rec("e1", spec, T0 + 1), rec("e2", spec, T0 + 2)]
    )
    assert [s.status for s in stored] == ["pending", "pending", "skipped"]
    assert stored[2].reason == "rate_limited"
    assert await status(storage, "e2") == ("skipped", "rate_limited")
    [later] = await storage.enqueue([rec("e3", spec, T0 + 60.5)])
    assert later.status == "pending"


async def test_throttle_discard_drops_triggers_inside_the_gap(storage: Storage) -> None:
    spec = FlowSpec(discard=(gate_id("j", "discard", None), 10.0))
    got = await storage.enqueue(
        [rec("e0", spec, T0), rec("e1", spec, T0 + 5), rec("e2", spec, T0 + 10)]
    )
    assert [(g.status, g.reason) for g in got] == [
        ("pending", None),
        ("skipped", "throttled"),
        ("pending", None),
    ]


async def test_debounce_trailing_replaces_the_pending_trigger(storage: Storage) -> None:
    spec = FlowSpec(debounce=(gate_id("j", "debounce", None), 5.0, False, 8.0))
    await storage.enqueue([rec("e0", spec, T0, input='{"n": 0}')])
    [e1] = await storage.enqueue([rec("e1", spec, T0 + 2, input='{"n": 1}')])
    assert e1.run_at == T0 + 7
    st, why = await status(storage, "e0")
    assert st == "skipped" and why is not None and why.startswith("debounced")
    [e2] = await storage.enqueue([rec("e2", spec, T0 + 6, input='{"n": 2}')])
    assert e2.run_at == T0 + 8  # timeout: no later than 8 s after the first trigger
    assert await claim_ids(storage, T0 + 7.9) == []
    assert await claim_ids(storage, T0 + 8) == ["e2"]
    # after it started, a new trigger begins a new stream
    [e3] = await storage.enqueue([rec("e3", spec, T0 + 9)])
    assert e3.run_at == T0 + 14
    assert await status(storage, "e2") == ("running", None)


async def test_debounce_leading_runs_the_first_at_once(storage: Storage) -> None:
    spec = FlowSpec(debounce=(gate_id("j", "debounce", None), 5.0, True, None))
    got = await storage.enqueue([rec("e0", spec, T0)])
    assert got[0].run_at == T0
    [e1] = await storage.enqueue([rec("e1", spec, T0 + 1)])
    [e2] = await storage.enqueue([rec("e2", spec, T0 + 2)])
    assert e1.run_at == T0 + 6 and e2.run_at == T0 + 7
    assert await status(storage, "e0") == ("pending", None)  # the leading one is kept
    assert (await status(storage, "e1"))[0] == "skipped"
    assert await claim_ids(storage, T0 + 7) == ["e0", "e2"]
    [e3] = await storage.enqueue([rec("e3", spec, T0 + 20)])  # window over: leads again
    assert e3.run_at == T0 + 20


async def test_singleton_skip_and_cancel(storage: Storage) -> None:
    skip = FlowSpec(singleton=(gate_id("j", "singleton", "k"), False))
    [a, b] = await storage.enqueue([rec("a", skip), rec("b", skip)])
    assert a.status == "pending" and b.status == "skipped"
    assert b.reason is not None and b.reason.startswith("singleton")
    assert await claim_ids(storage, T0 + 1) == ["a"]
    assert await storage.finish("a", "w1", Finish("completed", output="1"))
    [c] = await storage.enqueue([rec("c", skip, T0 + 2)])
    assert c.status == "pending"  # a is no longer live

    cancel = FlowSpec(singleton=(gate_id("j", "singleton", "x"), True))
    await storage.enqueue([rec("x1", cancel)])
    [x2] = await storage.enqueue([rec("x2", cancel, T0 + 1)])
    assert x2.status == "pending"
    st, why = await status(storage, "x1")
    assert st == "cancelled" and why is not None and "x2" in why


async def test_batch_collects_items_into_one_execution(storage: Storage) -> None:
    spec = FlowSpec(batch=(gate_id("j", "batch", None), 3, 10.0, "items"))
    got = await storage.enqueue(
        [rec(f"e{i}", spec, T0 + i, input=json.dumps({"items": [i]})) for i in range(4)]
    )
    assert [g.id for g in got] == ["e0", "e0", "e0", "e3"]
    full = await storage.get("e0")
    assert full is not None and json.loads(full.input) == {"items": [0, 1, 2]}
    assert full.available_at == T0 + 2  # full: due at once
    assert got[3].run_at == T0 + 3 + 10.0  # a new batch waits for more until its timeout
    assert await storage.get("e1") is None


async def test_an_idempotency_key_wins_over_flow_rules(storage: Storage) -> None:
    spec = FlowSpec(rate=(gate_id("j", "rate", None), 1, 60.0))
    [a] = await storage.enqueue([rec("a", spec, key="k")])
    [b] = await storage.enqueue([rec("b", spec, T0 + 1, key="k")])
    assert b.id == "a" and a.status == b.status == "pending"


# --- step slots ----------------------------------------------------------------------------


async def test_step_slots_cap_holders_and_lapse(storage: Storage) -> None:
    until = 60.0  # a lease, from the storage's now
    assert await storage.acquire_step("api", "e1|s", "w1", 2, until)
    assert await storage.acquire_step("api", "e2|s", "w1", 2, until)
    assert await storage.acquire_step("api", "e1|s", "w1", 2, until)  # held already
    assert not await storage.acquire_step("api", "e3|s", "w2", 2, until)
    assert await storage.acquire_step("other", "e3|s", "w2", 1, until)
    await storage.release_step("api", "e1|s")
    assert await storage.acquire_step("api", "e3|s", "w2", 2, until)
    # a holder whose lease ran out (its worker died) no longer counts
    assert await storage.acquire_step("db", "old", "gone", 1, -1.0)
    assert await storage.acquire_step("db", "new", "w1", 1, until)


async def test_a_backlog_behind_a_full_gate_does_not_hold_up_other_keys(storage: Storage) -> None:
    hot = FlowSpec(window=(gate_id("j", "window", "hot"), 1))
    cold = FlowSpec(window=(gate_id("j", "window", "cold"), 1))
    await storage.enqueue([rec("hot0", hot)])
    assert await claim_ids(storage, T0 + 1) == ["hot0"]
    await storage.enqueue([rec(f"hot{i}", hot, T0 + 1) for i in range(1, 3001)])
    await storage.enqueue([rec("cold", cold, T0 + 2)])
    assert await claim_ids(storage, T0 + 3) == ["cold"]  # one claim, past all 3,000
    page = await storage.query(ExecutionFilter(status=["pending"]), 5000, None)
    assert len(page.items) == 3000
    assert {e.reason for e in page.items} == {"concurrency"}
    assert await claim_ids(storage, T0 + 4) == []
