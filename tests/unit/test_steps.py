"""Steps on memory storage: memo and replay, keys, sleeps, child jobs, failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

import qanat
from qanat import Context, Step, job, run, sleep, sleep_until
from support import eventually


class Point(pydantic.BaseModel):
    x: int
    y: int


async def test_long_sleep_suspends_and_replay_skips_completed_steps(make_queue: Any) -> None:
    ran: list[str] = []

    def point() -> Point:
        ran.append("point")
        return Point(x=1, y=2)

    @job
    async def trip(ctx: Context) -> dict[str, Any]:
        p = await run("point", point)
        await sleep(0.2)  # longer than hot_sleep: the execution leaves the worker
        assert isinstance(p, Point), "replay must revive the annotated model"
        return {"p": p.x + p.y, "claims": (await _claims(ctx))}

    q = await make_queue(trip, hot_sleep=0.05)
    h = await q.jobs.trip.start()
    await eventually(lambda: _status_is(h, "waiting"))
    out = await h.result(timeout=5)
    assert out == {"p": 3, "claims": 2}
    assert ran == ["point"]


async def _claims(ctx: Context) -> int:
    rec = await ctx._state.worker.storage.get(ctx.execution_id)
    assert rec is not None
    return rec.claims


async def _status_is(h: qanat.Execution, status: str) -> bool:
    return await h.status() == status


async def test_step_keys_count_occurrences(make_queue: Any) -> None:
    @job
    async def loop() -> None:
        for i in range(3):
            await run("fetch", lambda i=i: i)
        await run("other", lambda: None)

    q = await make_queue(loop)
    h = await q.jobs.loop.start()
    await h.result(timeout=5)
    assert [s.key for s in await h.steps()] == ["fetch", "fetch#2", "fetch#3", "other"]
    assert [s.result for s in await h.steps()][:3] == [0, 1, 2]


async def test_gather_gets_keys_in_call_order_and_replays_them(make_queue: Any) -> None:
    async def slow(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    @job
    async def fan() -> list[int]:
        res = await asyncio.gather(
            run("f", slow, 1, 0.03), run("f", slow, 2, 0.01), run("f", slow, 3, 0.0)
        )
        await sleep(0.1)
        return list(res)

    q = await make_queue(fan, hot_sleep=0.01)
    h = await q.jobs.fan.start()
    assert await h.result(timeout=5) == [1, 2, 3]
    steps = {s.key: s.result for s in await h.steps()}
    assert steps["f"] == 1 and steps["f#2"] == 2 and steps["f#3"] == 3


async def test_nondeterminism_fails_loudly(make_queue: Any) -> None:
    @job(name="changing", retry=3)
    async def v1() -> str:
        await run("a", lambda: 1)
        await sleep(0.2)
        return "v1"

    async def v2() -> str:
        await run("a", lambda: 1)
        await run("sleep", lambda: 0)  # a run step where the record has a sleep
        return "v2"

    q = await make_queue(v1, hot_sleep=0.01)
    h = await q.jobs.changing.start()
    await eventually(lambda: _status_is(h, "waiting"))
    v1.handler = v2  # the code changed under a live execution
    with pytest.raises(
        qanat.NonDeterminism, match="recorded as sleep 'sleep' but the code now calls run 'sleep'"
    ):
        await h.result(timeout=5)
    assert (await h.record()).attempt == 1  # no retries for a broken invariant


async def test_step_retries_then_raises_catchable_error(make_queue: Any) -> None:
    tries: list[int] = []

    def flaky() -> None:
        tries.append(1)
        raise ConnectionError("down")

    @job
    async def uses_step() -> str:
        try:
            await run(Step("call", retry=3, backoff=0), flaky)
        except ConnectionError as exc:
            return f"caught {exc}"
        return "no error"

    q = await make_queue(uses_step)
    h = await q.jobs.uses_step.start()
    assert await h.result(timeout=5) == "caught down"
    assert len(tries) == 3
    [step] = await h.steps()
    assert step.status == "failed" and step.attempts == 3
    assert step.error is not None and step.error["type"] == "ConnectionError"


async def test_failed_step_replays_same_error_in_same_attempt(make_queue: Any) -> None:
    tries: list[int] = []

    def broken() -> None:
        tries.append(1)
        raise KeyError("missing")

    @job
    async def caught() -> str:
        try:
            await run(Step("k", retry=1), broken)
        except KeyError:
            pass
        await sleep(0.1)  # leaves the worker; the replay meets the failed step
        try:
            await run(Step("k", retry=1), broken)
        except KeyError:
            return "second failure raised"
        return "?"

    q = await make_queue(caught, hot_sleep=0.01)
    assert await q.jobs.caught.run() == "second failure raised"
    assert len(tries) == 2  # "k" ran once, "k#2" ran once; replay re-raised "k" from storage


async def test_new_job_attempt_reruns_failed_steps(make_queue: Any) -> None:
    tries: list[int] = []

    def fails_first() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("first")
        return "ok"

    @job(retry=2, backoff=0)
    async def outer() -> str:
        result: str = await run(Step("s", retry=1), fails_first)
        return result

    q = await make_queue(outer)
    assert await q.jobs.outer.run() == "ok"
    assert len(tries) == 2


async def test_step_timeout(make_queue: Any) -> None:
    async def hang() -> None:
        await asyncio.sleep(10)

    @job(retry=1)
    async def waits() -> None:
        await run(Step("hang", retry=1, timeout=0.05), hang)

    q = await make_queue(waits)
    with pytest.raises(qanat.Timeout, match="step 'hang' timed out"):
        await q.jobs.waits.run()


async def test_unserializable_step_result_names_the_step(make_queue: Any) -> None:
    @job(retry=1)
    async def bad() -> None:
        await run("sock", lambda: object())

    q = await make_queue(bad)
    with pytest.raises(TypeError, match="step 'sock'"):
        await q.jobs.bad.run()


async def test_suspend_is_not_caught_by_except_exception(make_queue: Any) -> None:
    ran: list[str] = []

    @job
    async def stubborn() -> str:
        try:
            await sleep(0.1)
        except Exception:
            ran.append("swallowed")
        return "done"

    q = await make_queue(stubborn, hot_sleep=0.01)
    assert await q.jobs.stubborn.run() == "done"
    assert ran == []


async def test_sleep_until_and_hot_sleep_marks_waiting(make_queue: Any) -> None:
    @job
    async def napper() -> str:
        await sleep_until(datetime.now(UTC) + timedelta(milliseconds=300))
        return "up"

    q = await make_queue(napper)
    h = await q.jobs.napper.start()
    await eventually(lambda: _status_is(h, "waiting"))
    assert await h.result(timeout=5) == "up"


async def test_child_job_is_a_step_and_replay_never_starts_a_second(make_queue: Any) -> None:
    child_runs: list[int] = []

    @job
    async def child(n: int) -> int:
        child_runs.append(n)
        return n * 2

    @job
    async def parent() -> int:
        a = await child.run(n=1)
        await sleep(0.1)  # replay from the top after this
        h = await child.start(n=2)
        b: int = await h.result()
        return a + b

    q = await make_queue(child, parent, hot_sleep=0.01)
    p = await q.jobs.parent.start()
    assert await p.result(timeout=5) == 6
    assert sorted(child_runs) == [1, 2]
    kids = [e async for e in q.executions.list(job="child")]
    assert len(kids) == 2
    assert all(k.info is not None and k.info.parent_id == p.id for k in kids)


async def test_many_children_do_not_deadlock_a_small_worker(make_queue: Any) -> None:
    @job
    async def leaf(i: int) -> int:
        return i

    @job
    async def mid(i: int) -> int:
        return await leaf.run(i=i)

    @job
    async def root() -> int:
        return sum(await asyncio.gather(*[mid.run(i=i) for i in range(20)]))

    q = await make_queue(leaf, mid, root, concurrency=2)
    assert await asyncio.wait_for(q.jobs.root.run(), 10) == sum(range(20))


async def test_step_functions_outside_a_job_raise_not_in_job() -> None:
    with pytest.raises(qanat.NotInJob, match=r"qanat.run\(\) was called outside a running job"):
        await run("x", lambda: 1)
    with pytest.raises(qanat.NotInJob):
        await sleep(1)
    with pytest.raises(qanat.NotInJob):
        qanat.progress(5)
    with pytest.raises(qanat.NotInJob):
        qanat.log("hi")
    with pytest.raises(qanat.NotInJob):
        qanat.sync.run("x", lambda: 1)


async def test_progress_and_logs_through_module_functions(make_queue: Any) -> None:
    seen: list[float] = []

    @job
    async def reporter() -> None:
        for pct in (10, 60, 100):
            qanat.progress(pct, f"at {pct}")
            qanat.log("step", pct=pct)
            await run(f"s{pct}", lambda: None)

    q = await make_queue(reporter)
    q.on("progress", lambda ev: seen.append(ev.payload["detail"]["pct"]))
    h = await q.jobs.reporter.start()
    await h.result(timeout=5)
    assert [ln.fields["pct"] for ln in await h.logs()] == [10, 60, 100]
    prog = await h.progress()
    assert prog is not None and prog.pct == 100 and prog.message == "at 100"
    assert seen == [10, 60, 100]
    with pytest.raises(ValueError, match="retry must be an int >= 1"):
        Step("x", retry=0)


async def test_keyed_child_and_awaiting_a_handle_inside_a_job(make_queue: Any) -> None:
    runs: list[int] = []

    @job
    async def once(n: int) -> int:
        runs.append(n)
        return n

    @job
    async def caller() -> list[int]:
        a = await once.run(n=1, key="only-once")
        b = await once.run(n=1, key="only-once")  # same key: the same child
        h = await once.start(n=2)
        c: int = await h.result()  # awaiting a handle frees the slot, like .run()
        return [a, b, c]

    q = await make_queue(once, caller, concurrency=1)
    assert await asyncio.wait_for(q.jobs.caller.run(), 10) == [1, 1, 2]
    assert runs == [1, 2]
