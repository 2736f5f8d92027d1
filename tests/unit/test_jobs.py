"""Jobs on memory storage: input/output, Context, plain handlers, retries, hooks, calling."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

import qanat
from qanat import Context, NonRetryable, Queue, RetryAfter, job, run


class Song(pydantic.BaseModel):
    path: str
    plays: int = 0


async def test_signature_input_and_output(make_queue: Any) -> None:
    @job
    async def add(a: int, b: int = 2) -> int:
        return a + b

    q = await make_queue(add)
    assert await q.jobs.add.run(a=1) == 3
    assert await q.jobs["add"].run(5, b=5) == 10


async def test_invalid_input_raises_at_enqueue_and_stores_nothing(make_queue: Any) -> None:
    @job
    async def add(a: int, b: int) -> int:
        return a + b

    q = await make_queue(add, worker=False)
    with pytest.raises(pydantic.ValidationError) as info:
        await q.jobs.add.start(a="not a number", b=1)
    assert "a" in str(info.value)
    with pytest.raises(pydantic.ValidationError):
        await q.jobs.add.start(a=1, b=2, c=3)
    assert [e async for e in q.executions.list()] == []


async def test_model_input_accepts_model_or_dict(make_queue: Any) -> None:
    @job(input=Song)
    async def play(song: Song) -> str:
        assert isinstance(song, Song)
        return f"{song.path}:{song.plays}"

    q = await make_queue(play)
    assert await q.jobs.play.run(Song(path="a.mp3", plays=3)) == "a.mp3:3"
    assert await q.jobs.play.run({"path": "b.mp3"}) == "b.mp3:0"


async def test_output_mismatch_fails_with_clear_error(make_queue: Any) -> None:
    @job(retry=1)
    async def wrong() -> int:
        return "seven"  # type: ignore[return-value]

    q = await make_queue(wrong)
    with pytest.raises(Exception, match="does not match its output type"):
        await q.jobs.wrong.run()


async def test_output_model_comes_back_as_model(make_queue: Any) -> None:
    @job
    async def make_song(path: str) -> Song:
        return Song(path=path, plays=1)

    q = await make_queue(make_song)
    out = await q.jobs.make_song.run(path="x")
    assert out == Song(path="x", plays=1)


async def test_context_is_injected_not_input(make_queue: Any) -> None:
    @job
    async def who(n: int, ctx: Context) -> dict[str, Any]:
        ctx.log("hello", n=n)
        ctx.progress(50, "half")
        return {"id": ctx.execution_id, "job": ctx.job, "attempt": ctx.attempt, "app": ctx.context}

    q = await make_queue(who, context={"db": "x"})
    h = await q.jobs.who.start(n=1)
    out = await h.result(timeout=5)
    assert out == {"id": h.id, "job": "who", "attempt": 1, "app": {"db": "x"}}
    logs = await h.logs()
    assert [(ln.message, ln.fields) for ln in logs] == [("hello", {"n": 1})]
    prog = await h.progress()
    assert prog is not None and prog.pct == 50 and prog.message == "half"


async def test_plain_def_handler_uses_sync_steps(make_queue: Any) -> None:
    calls: list[int] = []

    def square(x: int) -> int:
        calls.append(x)
        return x * x

    @job
    def plain(x: int) -> int:
        return qanat.sync.run("square", square, x) + 1

    q = await make_queue(plain)
    h = await q.jobs.plain.start(x=4)
    assert await h.result(timeout=5) == 17
    assert calls == [4]
    assert [s.key for s in await h.steps()] == ["square"]


async def test_retry_counts_total_attempts(make_queue: Any) -> None:
    attempts: list[int] = []

    @job(retry=3, backoff=0)
    async def always_fails(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("nope")

    q = await make_queue(always_fails)
    h = await q.jobs.always_fails.start()
    with pytest.raises(RuntimeError, match="nope"):
        await h.result(timeout=5)
    assert attempts == [1, 2, 3]
    rec = await h.record()
    assert rec.status == "failed" and rec.attempt == 3


async def test_retry_replays_completed_steps(make_queue: Any) -> None:
    ran: list[str] = []

    @job(retry=2, backoff=0)
    async def two_steps(ctx: Context) -> str:
        await run("first", lambda: ran.append("first"))
        if ctx.attempt == 1:
            raise RuntimeError("fail after first")
        await run("second", lambda: ran.append("second"))
        return "done"

    q = await make_queue(two_steps)
    assert await q.jobs.two_steps.run() == "done"
    assert ran == ["first", "second"]


async def test_non_retryable_fails_at_once(make_queue: Any) -> None:
    attempts: list[int] = []

    @job(retry=5, backoff=0)
    async def fatal(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise NonRetryable("bad card")

    q = await make_queue(fatal)
    with pytest.raises(NonRetryable, match="bad card"):
        await q.jobs.fatal.run()
    assert attempts == [1]


async def test_retry_after_sets_next_attempt_time(make_queue: Any) -> None:
    times: list[float] = []

    @job(retry=2, backoff=100)
    async def later(ctx: Context) -> str:
        times.append(asyncio.get_running_loop().time())
        if ctx.attempt == 1:
            raise RetryAfter(0.2, "busy")
        return "ok"

    q = await make_queue(later)
    assert await q.jobs.later.run() == "ok"
    assert times[1] - times[0] >= 0.19


async def test_backoff_list_and_function(make_queue: Any) -> None:
    seen: list[tuple[int, Any]] = []

    def backoff(attempt: int, value: Any) -> float:
        seen.append((attempt, value))
        return 0.0

    @job(retry=3, backoff=backoff)
    async def flaky(n: int) -> None:
        raise RuntimeError("x")

    q = await make_queue(flaky)
    with pytest.raises(RuntimeError):
        await q.jobs.flaky.run(n=7)
    assert seen == [(1, {"n": 7}), (2, {"n": 7})]


async def test_timeout_cancels_attempt_with_timeout_error(make_queue: Any) -> None:
    @job(timeout=0.05, retry=1)
    async def slow() -> None:
        await asyncio.sleep(10)

    q = await make_queue(slow)
    with pytest.raises(qanat.Timeout, match="timeout"):
        await q.jobs.slow.run()


async def test_cache_returns_previous_output(make_queue: Any) -> None:
    runs: list[int] = []

    @job(cache=True)
    async def lookup(n: int) -> int:
        runs.append(n)
        return n * 10

    q = await make_queue(lookup)
    first = await q.jobs.lookup.start(n=1)
    assert await first.result(timeout=5) == 10
    again = await q.jobs.lookup.start(n=1)
    assert again.id == first.id
    assert await q.jobs.lookup.run(n=2) == 20
    assert runs == [1, 2]


async def test_all_hooks_fire_in_order(make_queue: Any) -> None:
    events: list[tuple[str, Any]] = []

    def hook(name: str) -> Any:
        def h(value: Any, *extra: Any) -> None:
            events.append((name, extra[0] if extra else value))

        return h

    async def on_success(value: Any, output: Any) -> None:
        events.append(("success", output))

    @job(
        retry=2,
        backoff=0,
        on_trigger=hook("trigger"),
        on_start=hook("start"),
        on_success=on_success,
        on_error=lambda v, e: events.append(("error", str(e))),
        on_failure=hook("failure"),
        on_settled=hook("settled"),
    )
    async def hooked(ctx: Context) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first")
        return 5

    q = await make_queue(hooked)
    globals_seen: list[str] = []
    q.on("success", lambda ev: globals_seen.append(f"{ev.name}:{ev.job}"))
    assert await q.jobs.hooked.run() == 5
    assert events == [
        ("trigger", {}),
        ("start", {}),
        ("error", "first"),
        ("success", 5),
        ("settled", "completed"),
    ]
    assert globals_seen == ["success:hooked"]


async def test_hook_that_raises_does_not_break_execution(make_queue: Any) -> None:
    def bad_hook(*args: Any) -> None:
        raise ValueError("hook bug")

    @job(on_start=bad_hook, on_success=bad_hook)
    async def fine() -> str:
        return "ok"

    q = await make_queue(fine)
    assert await q.jobs.fine.run() == "ok"


async def test_idempotency_key_returns_same_execution(make_queue: Any) -> None:
    @job
    async def charge(amount: int) -> int:
        return amount

    q = await make_queue(charge)
    a = await q.jobs.charge.start(amount=5, key="order-1")
    await a.result(timeout=5)
    b = await q.jobs.charge.start(amount=5, key="order-1")
    assert a.id == b.id


async def test_priority_orders_ready_executions(make_queue: Any) -> None:
    order: list[str] = []

    @job
    async def task(name: str) -> None:
        order.append(name)

    q = await make_queue(task, worker=False)
    await q.jobs.task.start(name="low", priority=0)
    await q.jobs.task.start(name="high", priority=10)
    await q.jobs.task.start(name="mid", priority=5)
    await q.start(worker=True, concurrency=1)
    await asyncio.wait_for(_drain(q), 5)
    assert order == ["high", "mid", "low"]


async def _drain(q: Queue) -> None:
    while await q.executions.first(status=["pending", "running"]) is not None:
        await asyncio.sleep(0.01)


async def test_delay_and_run_at(make_queue: Any) -> None:
    @job
    async def tick() -> float:
        return asyncio.get_running_loop().time()

    q = await make_queue(tick)
    t0 = asyncio.get_running_loop().time()
    h = await q.jobs.tick.start(delay="200ms")
    assert await h.status() == "pending"
    assert await h.result(timeout=5) - t0 >= 0.19
    h2 = await q.jobs.tick.start(run_at=datetime.now(UTC) + timedelta(milliseconds=100))
    assert await h2.result(timeout=5) - t0 >= 0.09
    with pytest.raises(ValueError, match="naive"):
        await q.jobs.tick.start(run_at=datetime.now())


async def test_deadline_fails_with_timeout(make_queue: Any) -> None:
    @job(retry=5)
    async def slow() -> None:
        await asyncio.sleep(10)

    q = await make_queue(slow)
    h = await q.jobs.slow.start(deadline=0.1)
    # interrupted while running: a qanat.Timeout (SPEC §3), not retried despite retry=5
    with pytest.raises(qanat.Timeout, match="job 'slow' exceeded its deadline"):
        await h.result(timeout=5)
    rec = await h.record()
    assert (rec.status, rec.attempt) == ("failed", 1)
    assert '"type": "Timeout"' in (rec.error or "")


async def test_start_many_and_group_cancel(make_queue: Any) -> None:
    @job
    async def wait_forever(n: int) -> None:
        await asyncio.sleep(3600)

    q = await make_queue(wait_forever, worker=False)
    hs = await q.jobs.wait_forever.start_many([{"n": i} for i in range(5)])
    assert len({h.id for h in hs}) == 5
    assert await q.jobs.wait_forever.cancel(n=3) == 1
    assert await hs[3].status() == "cancelled"
    assert await q.jobs.wait_forever.cancel(where=lambda v: v["n"] < 2) == 2
    statuses = [await h.status() for h in hs]
    assert statuses == ["cancelled", "cancelled", "pending", "cancelled", "pending"]
    with pytest.raises(qanat.Cancelled):
        await hs[0].result(timeout=1)


async def test_duplicate_job_names_refused() -> None:
    @job(name="same")
    async def a() -> None: ...

    @job(name="same")
    async def b() -> None: ...

    with pytest.raises(qanat.ConfigurationError, match="two jobs are named 'same'"):
        Queue(jobs=[a, b], storage="memory://")


async def test_unknown_job_name_is_clear() -> None:
    @job
    async def a() -> None: ...

    q = Queue(jobs=[a], storage="memory://")
    with pytest.raises(qanat.UnknownJob, match=r"no job named 'nope'.*jobs: a"):
        q.jobs["nope"]


def test_bad_definitions_fail_at_definition() -> None:
    with pytest.raises(ValueError, match="5 parsecs"):

        @job(timeout="5 parsecs")
        async def a() -> None: ...

    with pytest.raises(qanat.ConfigurationError, match="retry"):

        @job(retry=0)
        async def b() -> None: ...

    with pytest.raises(qanat.ConfigurationError, match="throttle"):

        @job(throttle="1 per fortnight")
        async def c() -> None: ...


async def test_unserializable_output_names_the_job(make_queue: Any) -> None:
    @job(retry=1)
    async def sock() -> Any:
        return object()

    q = await make_queue(sock)
    with pytest.raises(Exception, match="output of job 'sock'"):
        await q.jobs.sock.run()
