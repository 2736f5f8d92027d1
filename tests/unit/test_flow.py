"""Flow control: the decision rules on a controllable clock, option checking, and the
options at work on a memory queue."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pydantic
import pytest

import qanat
from qanat import (
    Batch,
    CancelOn,
    Concurrency,
    Debounce,
    Pipe,
    Queue,
    RateLimit,
    Singleton,
    Step,
    Throttle,
    job,
    run,
)
from qanat.flow import FlowOptions
from qanat.storage.flow import (
    FlowSpec,
    Gate,
    debounce_plan,
    gate_id,
    throttle_drops,
    window_opens_at,
)

# --- pure rules on a fake clock ------------------------------------------------------------


def test_window_opens_when_the_oldest_counted_start_leaves() -> None:
    assert window_opens_at([], 2, 10.0, 100.0) is None
    assert window_opens_at([99.0], 2, 10.0, 100.0) is None
    assert window_opens_at([99.0, 95.0], 2, 10.0, 100.0) == 105.0
    assert window_opens_at([99.0, 95.0, 80.0], 2, 10.0, 100.0) == 105.0
    assert window_opens_at([99.0, 90.0], 2, 10.0, 100.0) is None  # 90 has left (100 - 10)


def test_throttle_discard_gap() -> None:
    assert not throttle_drops(None, 5.0, 100.0)
    assert throttle_drops(97.0, 5.0, 100.0)
    assert not throttle_drops(95.0, 5.0, 100.0)


def test_debounce_trailing_plan() -> None:
    first = debounce_plan(Gate(), False, 5.0, False, None, 100.0, "a")
    assert (first.due, first.replaces, first.state.ref, first.state.first_at) == (
        105.0,
        None,
        "a",
        100.0,
    )
    second = debounce_plan(first.state, True, 5.0, False, None, 103.0, "b")
    assert (second.due, second.replaces, second.state.first_at) == (108.0, "a", 100.0)
    # the pending one already started: a new stream
    third = debounce_plan(second.state, False, 5.0, False, None, 104.0, "c")
    assert (third.due, third.replaces, third.state.first_at) == (109.0, None, 104.0)


def test_debounce_timeout_caps_the_wait_since_the_first_trigger() -> None:
    s = debounce_plan(Gate(), False, 5.0, False, 7.0, 100.0, "a").state
    for at in (103.0, 106.0):
        plan = debounce_plan(s, True, 5.0, False, 7.0, at, "x")
        s = plan.state
    assert plan.due == 107.0
    late = debounce_plan(s, True, 5.0, False, 7.0, 110.0, "y")  # past the cap: at once
    assert late.due == 110.0


def test_debounce_leading_plan() -> None:
    lead = debounce_plan(Gate(), False, 5.0, True, None, 100.0, "a")
    assert (lead.due, lead.state.ref) == (100.0, None)
    trail = debounce_plan(lead.state, False, 5.0, True, None, 102.0, "b")
    assert (trail.due, trail.replaces, trail.state.ref) == (107.0, None, "b")
    again = debounce_plan(trail.state, True, 5.0, True, None, 104.0, "c")
    assert (again.due, again.replaces) == (109.0, "b")
    quiet = debounce_plan(Gate(ref=None, first_at=100.0, last_at=104.0), False, 5.0, True, None,
                          120.0, "d")  # fmt: skip
    assert quiet.due == 120.0


def test_spec_round_trips_through_json() -> None:
    spec = FlowSpec(
        window=("w", 2),
        rolling=[("r", 3, 2.0)],
        rate=("rl", 10, 60.0),
        discard=("d", 1.0),
        debounce=("db", 5.0, True, 9.0),
        singleton=("s", True),
        batch=("b", 10, 1.0, "items"),
    )
    assert FlowSpec.load(spec.dump()) == spec
    assert FlowSpec.load(FlowSpec().dump()) == FlowSpec()


# --- options: checked at definition, computed at enqueue ------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency= the limit must be a whole number >= 1"),
        ({"concurrency": -3}, "concurrency"),
        ({"concurrency": Concurrency(2, mode="sliding")}, "mode must be one of window, rolling"),
        ({"concurrency": Concurrency(2, mode="rolling")}, "needs a frequency"),
        ({"concurrency": Concurrency("0 per 5 minutes", mode="rolling")}, "positive"),
        ({"concurrency": Concurrency(2, key="user")}, "key must be a function"),
        ({"throttle": "1 per fortnight"}, "throttle"),
        ({"throttle": Throttle("1/s", mode="drop")}, "mode must be one of queue, discard"),
        ({"throttle": 0}, "longer than zero"),
        ({"rate_limit": "ten a minute"}, "rate_limit"),
        ({"rate_limit": RateLimit("0/min")}, "rate_limit"),
        ({"debounce": "-1s"}, "debounce"),
        ({"debounce": Debounce("1s", mode="middle")}, "trailing, leading"),
        ({"debounce": Debounce("1s", timeout=0)}, "longer than zero"),
        ({"singleton": Singleton(mode="both")}, "skip, cancel"),
        ({"singleton": "yes"}, "singleton"),
        ({"batch": Batch(0, "1s")}, "max_size"),
        ({"batch": 5}, "qanat.Batch"),
        ({"cancel_on": ["orders"]}, "cancel_on"),
    ],
)
def test_invalid_options_fail_at_definition(options: dict[str, Any], message: str) -> None:
    with pytest.raises(qanat.ConfigurationError, match=message) as info:

        @job(**options)
        async def handler(items: list[int]) -> None: ...

    assert "'handler'" in str(info.value)


def test_batch_needs_a_list_parameter() -> None:
    with pytest.raises(qanat.ConfigurationError, match="one list parameter"):

        @job(batch=Batch(5, "1s"))
        async def handler(n: int) -> None: ...


def test_keys_and_option_functions_run_at_enqueue() -> None:
    opts = FlowOptions(
        "j",
        {
            "concurrency": lambda i: Concurrency(1 if i["vip"] else 3, key=lambda i: i["user"]),
            "throttle": Throttle("10/min", key=lambda i: i["user"]),
            "rate_limit": lambda i: None if i["vip"] else "5/s",
        },
    )
    vip = opts.spec_for({"user": "ann", "vip": True})
    assert vip is not None
    assert vip.window == (gate_id("j", "window", "ann"), 1)
    assert vip.rolling == [(gate_id("j", "throttle", "ann"), 1, 6.0)]  # "10/min": every 6 s
    assert vip.rate is None
    other = opts.spec_for({"user": "bob", "vip": False})
    assert other is not None and other.window == (gate_id("j", "window", "bob"), 3)
    assert other.rate == (gate_id("j", "rate", None), 5, 1.0)


def test_an_option_function_returning_a_bad_option_fails_at_the_call() -> None:
    opts = FlowOptions("j", {"concurrency": lambda i: 0})
    with pytest.raises(qanat.ConfigurationError, match="concurrency"):
        opts.spec_for({})


# --- at work on a queue (memory, and a SQLite file where the path differs) -------------------


@pytest.fixture(params=["memory", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'flow.db'}"


async def test_keyed_concurrency_runs_keys_in_parallel_and_each_serially(
    make_queue: Any, storage_url: str
) -> None:
    active: dict[str, int] = {}
    peak: dict[str, int] = {}
    total = {"now": 0, "peak": 0}

    @job(concurrency=Concurrency(1, key=lambda i: i["user"]))
    async def work(user: str, n: int) -> int:
        active[user] = active.get(user, 0) + 1
        total["now"] += 1
        peak[user] = max(peak.get(user, 0), active[user])
        total["peak"] = max(total["peak"], total["now"])
        await asyncio.sleep(0.01)
        active[user] -= 1
        total["now"] -= 1
        return n

    q = await make_queue(work, storage=storage_url)
    hs = [await q.jobs.work.start(user=f"u{i % 3}", n=i) for i in range(12)]
    assert [await h.result(timeout=10) for h in hs] == list(range(12))
    assert peak == {"u0": 1, "u1": 1, "u2": 1}
    assert total["peak"] > 1


async def test_waiting_on_a_child_frees_the_slot_and_takes_it_back(
    make_queue: Any, storage_url: str
) -> None:
    running = {"now": 0, "peak": 0}

    @job(concurrency=1)
    async def tree(depth: int) -> int:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        try:
            if depth == 0:
                return 1
            running["now"] -= 1
            child = await tree.start(depth=depth - 1)  # same job, limit 1: must not deadlock
            got: int = await child.result()
            running["now"] += 1
            return got + 1
        finally:
            running["now"] -= 1

    q = await make_queue(tree, storage=storage_url)
    assert await q.jobs.tree.run(depth=3) == 4
    assert running["peak"] == 1


async def test_dropped_triggers_are_visible_with_their_reason(make_queue: Any) -> None:
    @job(rate_limit="2/min")
    async def ping(n: int) -> int:
        return n

    q = await make_queue(ping)
    hs = [await q.jobs.ping.start(n=i) for i in range(4)]
    assert await hs[0].result(timeout=5) == 0
    with pytest.raises(qanat.Skipped, match="rate_limited"):
        await hs[3].result(timeout=5)
    skipped = [e async for e in q.executions.list(status="skipped")]
    assert sorted(e.id for e in skipped) == sorted(h.id for h in hs[2:])
    assert {e.info.reason for e in skipped if e.info} == {"rate_limited"}


class Order(pydantic.BaseModel):
    id: int


async def test_batch_handler_receives_the_list(make_queue: Any) -> None:
    got: list[list[int]] = []

    @job(batch=Batch(3, "10s"))
    async def ship(items: list[Order]) -> int:
        got.append([o.id for o in items])
        return len(items)

    q = await make_queue(ship)
    hs = [await q.jobs.ship.start(Order(id=i)) for i in range(3)]
    assert len({h.id for h in hs}) == 1
    assert await hs[0].result(timeout=5) == 3
    assert got == [[0, 1, 2]]
    with pytest.raises(pydantic.ValidationError):
        await q.jobs.ship.start({"id": "not a number"})


async def test_cancel_on_matching_event_cancels_live_executions(make_queue: Any) -> None:
    class OrderEvent(pydantic.BaseModel):
        order_id: str

    cancelled = Pipe("order.cancelled", input=OrderEvent)
    gate = asyncio.Event()

    @job(
        cancel_on=[
            CancelOn(cancelled, match=lambda event, input: event.order_id == input["order_id"])
        ]
    )
    async def fulfil(order_id: str) -> str:
        await gate.wait()
        return order_id

    q = Queue(jobs=[fulfil], pipes=[cancelled], storage="memory://")
    await q.start()
    try:
        a = await q.jobs.fulfil.start(order_id="a")
        b = await q.jobs.fulfil.start(order_id="b")
        c = await q.jobs.fulfil.start(order_id="c", delay="1h")  # pending, not started
        await q.pipes["order.cancelled"].send({"order_id": "a"})
        await q.pipes["order.cancelled"].send({"order_id": "c"})
        with pytest.raises(qanat.Cancelled):
            await a.result(timeout=5)
        with pytest.raises(qanat.Cancelled):
            await c.result(timeout=5)
        assert await b.status() in ("running", "pending")
        info = await q.storage.get(a.id)
        assert info is not None and "cancel_on" in (info.reason or "")
        gate.set()
        assert await b.result(timeout=5) == "b"
    finally:
        await q.stop(grace=1)


async def test_step_concurrency_caps_one_step_across_executions(
    make_queue: Any, storage_url: str
) -> None:
    inside = {"now": 0, "peak": 0}

    async def call_api(n: int) -> int:
        inside["now"] += 1
        inside["peak"] = max(inside["peak"], inside["now"])
        await asyncio.sleep(0.01)
        inside["now"] -= 1
        return n

    @job
    async def fetch(n: int) -> int:
        got: int = await run(Step("call-api", concurrency=2), call_api, n)
        return got

    q = await make_queue(fetch, storage=storage_url)
    hs = [await q.jobs.fetch.start(n=i) for i in range(8)]
    assert [await h.result(timeout=10) for h in hs] == list(range(8))
    assert inside["peak"] == 2


def test_step_concurrency_is_checked() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Step("x", concurrency=0)


async def test_singleton_cancel_replaces_the_live_execution(
    make_queue: Any, storage_url: str
) -> None:
    gate = asyncio.Event()

    @job(singleton=Singleton(mode="cancel"))
    async def sync_all(n: int) -> int:
        await gate.wait()
        return n

    q = await make_queue(sync_all, storage=storage_url)
    first = await q.jobs.sync_all.start(n=1)
    while await first.status() != "running":
        await asyncio.sleep(0.005)
    second = await q.jobs.sync_all.start(n=2)
    with pytest.raises(qanat.Cancelled):
        await first.result(timeout=5)
    gate.set()
    assert await second.result(timeout=5) == 2


async def test_priority_function_orders_and_equal_priority_is_fifo(make_queue: Any) -> None:
    order: list[str] = []

    @job(priority=lambda i: 10 if i["name"].startswith("vip") else 0)
    async def serve(name: str) -> None:
        order.append(name)

    q = await make_queue(serve, worker=False)
    for name in ("a", "vip1", "b", "vip2", "c"):
        await q.jobs.serve.start(name=name)
    await q.jobs.serve.start(name="forced", priority=20)
    await q.start(worker=True, concurrency=1)
    while await q.executions.first(status=["pending", "running"]) is not None:
        await asyncio.sleep(0.01)
    assert order == ["forced", "vip1", "vip2", "a", "b", "c"]


def test_flow_spec_is_stored_with_the_execution() -> None:
    @job(concurrency=Concurrency(2, key=lambda i: i["user"]))
    async def work(user: str) -> None: ...

    rec, _ = work.new_record((), {"user": "ann"})
    assert rec.flow is not None
    assert json.loads(rec.flow)["window"] == [gate_id("work", "window", "ann"), 2]


async def test_queue_concurrency_caps_one_worker_process(make_queue: Any) -> None:
    inside = {"now": 0, "peak": 0}

    @job
    async def busy(n: int) -> int:
        inside["now"] += 1
        inside["peak"] = max(inside["peak"], inside["now"])
        await asyncio.sleep(0.01)
        inside["now"] -= 1
        return n

    q = await make_queue(busy, concurrency=3)
    hs = await q.jobs.busy.start_many([{"n": i} for i in range(12)])
    assert [await h.result(timeout=10) for h in hs] == list(range(12))
    assert inside["peak"] == 3


async def test_a_cancel_on_match_that_raises_cancels_nothing_and_send_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = Pipe("stop")

    @job(cancel_on=[CancelOn(stop, match=lambda event, input: event["missing"])])
    async def slow(n: int) -> int:
        return n

    q = Queue(jobs=[slow], pipes=[stop], storage="memory://")
    await q.start(worker=False)
    try:
        h = await q.jobs.slow.start(n=1)
        info = await q.pipes.stop.send({"other": 1})
        assert info.pipe == "stop"
        assert await h.status() == "pending"
        assert "cancel_on match" in caplog.text
    finally:
        await q.stop(grace=1)
