"""Pipes, triggers and the event log on memory and SQLite storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
import pytest_asyncio

import qanat
from qanat import Job, Pipe, Queue, job, run
from support import eventually


class Upload(pydantic.BaseModel):
    path: str
    size: int


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    queues: list[Queue] = []

    async def make(
        jobs: list[Job[Any]], pipes: list[Pipe[Any]], worker: bool = True, **kw: Any
    ) -> Queue:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/q.db"
        hot_sleep = kw.pop("hot_sleep", None)
        q = Queue(jobs=jobs, pipes=pipes, storage=url, **kw)
        await q.start(worker=worker, hot_sleep=hot_sleep)
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.stop(grace=1)


async def get(q: Queue, execution_id: str) -> qanat.Execution:
    e = await q.executions.get(execution_id)
    assert e is not None
    return e


async def events(q: Queue, **kw: Any) -> list[qanat.EventInfo]:
    return [e async for e in q.events.list(**kw)]


async def test_send_validates_and_stores_nothing_on_bad_data(make_queue: Any) -> None:
    uploads = Pipe("uploads", input=Upload)

    @job(triggers=[uploads])
    async def index(path: str, size: int) -> str:
        return path

    q = await make_queue([index], [uploads], worker=False)
    with pytest.raises(pydantic.ValidationError):
        await q.pipes.uploads.send({"path": "a.mp3", "size": "big"})
    with pytest.raises(pydantic.ValidationError):
        await q.pipes["uploads"].send(42)
    assert await events(q) == []
    assert [e async for e in q.executions.list()] == []


async def test_send_triggers_jobs_and_transforms(make_queue: Any) -> None:
    uploads = Pipe("uploads", input=Upload)
    seen: list[Any] = []

    @job(triggers=[uploads])
    async def index(path: str, size: int) -> str:
        seen.append(("index", path, size))
        return path

    @job(input=Upload, triggers=[uploads])
    async def store(u: Upload) -> int:
        seen.append(("store", u.size))
        return u.size

    @job(triggers=[uploads.into(lambda u: {"name": u.path.upper()})])
    async def shout(name: str) -> str:
        seen.append(("shout", name))
        return name

    q = await make_queue([index, store, shout], [uploads])
    info = await q.pipes.uploads.send(Upload(path="a.mp3", size=3))
    assert info.pipe == "uploads" and info.data == Upload(path="a.mp3", size=3)
    assert len(info.executions) == 3 and info.failed == []
    results = [await (await get(q, i)).result(5) for i in info.executions]
    assert sorted(map(str, results)) == ["3", "A.MP3", "a.mp3"]
    assert sorted(seen, key=str) == sorted(
        [("index", "a.mp3", 3), ("store", 3), ("shout", "A.MP3")], key=str
    )
    [logged] = await events(q)
    assert logged.id == info.id and logged.executions == info.executions
    assert logged.sent_at.tzinfo is not None


async def test_job_into_chains(make_queue: Any) -> None:
    @job
    async def first(n: int) -> int:
        return n + 1

    @job(triggers=[first.into(lambda out: {"n": out * 10})])
    async def second(n: int) -> int:
        return n + 1

    @job(triggers=[second.into(lambda out: {"total": out})])
    async def third(total: int) -> str:
        return f"total={total}"

    q = await make_queue([first, second, third], [])
    assert await q.jobs.first.run(n=1) == 2

    async def done() -> Any:
        e = await q.executions.first(job="third", status="completed")
        return e

    e = await eventually(done)
    assert await e.result() == "total=21"


async def test_failing_transform_is_recorded_and_others_still_run(make_queue: Any) -> None:
    pings = Pipe("pings")

    def explode(data: Any) -> Any:
        raise ValueError("boom")

    @job(triggers=[pings.into(explode)])
    async def broken(x: int) -> None: ...

    @job(triggers=[pings.into(lambda d: {"x": "not an int"})])
    async def invalid(x: int) -> None: ...

    @job(triggers=[pings])
    async def fine(x: int) -> int:
        return x

    q = await make_queue([broken, invalid, fine], [pings])
    info = await pings.send({"x": 5})
    assert len(info.executions) == 1
    assert await (await get(q, info.executions[0])).result(5) == 5
    failed = {f.job: f for f in info.failed}
    assert set(failed) == {"broken", "invalid"}
    assert "ValueError: boom" in failed["broken"].error
    assert "invalid input for job 'invalid'" in failed["invalid"].error
    assert all(f.source == info.id for f in info.failed)
    [logged] = await events(q)
    assert {f.job for f in logged.failed} == {"broken", "invalid"}


async def test_failing_job_into_transform_is_logged_and_others_run(make_queue: Any) -> None:
    @job
    async def up() -> int:
        return 7

    @job(triggers=[up.into(lambda out: 1 / 0)])
    async def bad(n: int) -> None: ...

    @job(triggers=[up.into(lambda out: {"n": out})])
    async def good(n: int) -> int:
        return n

    q = await make_queue([up, bad, good], [])
    h = await q.jobs.up.start()
    assert await h.result(5) == 7
    e = await eventually(lambda: q.executions.first(job="good", status="completed"))
    assert await e.result() == 7
    [failure] = await q.storage.trigger_failures(h.id)
    assert failure.job == "bad" and "ZeroDivisionError" in failure.error
    assert any("trigger of job 'bad' failed" in line.message for line in await h.logs())


async def test_send_inside_a_job_is_checkpointed(make_queue: Any) -> None:
    done = Pipe("done")
    calls: list[int] = []

    @job(triggers=[done])
    async def listener(n: int) -> int:
        calls.append(n)
        return n

    @job
    async def producer(n: int) -> str:
        info = await done.send({"n": n})
        await qanat.sleep(0.3)  # longer than hot_sleep: suspends, then replays
        await run("after", lambda: None)
        return info.id

    q = await make_queue([listener, producer], [done], hot_sleep=0.01)
    h = await q.jobs.producer.start(n=4)
    event_id = await h.result(10)
    rec = await q.storage.get(h.id)
    assert rec is not None and rec.claims >= 2  # it was replayed
    logged = await events(q)
    assert [e.id for e in logged] == [event_id]
    assert logged[0].source == h.id
    await eventually(lambda: q.executions.first(job="listener", status="completed"))
    assert calls == [4]
    assert [s.kind for s in await h.steps()][:1] == ["send"]


async def test_events_list_pages_filters_and_since(make_queue: Any) -> None:
    a, b = Pipe("a"), Pipe("b")
    q = await make_queue([], [a, b], worker=False)
    sent = [await (a if i % 2 else b).send({"i": i}) for i in range(7)]
    got = await events(q)
    assert [e.id for e in got] == [e.id for e in reversed(sent)]
    paged = [e async for e in q.events.list(page_size=2)]
    assert [e.id for e in paged] == [e.id for e in reversed(sent)]
    assert [e.data["i"] for e in await events(q, pipe="a")] == [5, 3, 1]
    assert [e.data["i"] for e in await events(q, pipe=b, limit=2)] == [6, 4]
    since = sent[4].sent_at
    assert [e.data["i"] for e in await events(q, since=since)] == [6, 5, 4]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await events(q, since=future) == []


async def test_retention_purges_old_events(make_queue: Any) -> None:
    p = Pipe("p")
    q = await make_queue([], [p], worker=False, retention={"completed": "1h", "failed": "2h"})
    await p.send(1)
    await p.send(2)
    old = qanat.storage.EventRecord("old", "p", "3", datetime.now(UTC).timestamp() - 3 * 3600)
    await q.storage.send(old, [], [])
    assert len(await events(q)) == 3
    assert await q.apply_retention() == 1  # older than the longest window (2h)
    assert [e.data for e in await events(q)] == [2, 1]
    q.retention = {"max_per_status": 1}
    assert await q.apply_retention() == 1
    assert [e.data for e in await events(q)] == [2]


async def test_registration_errors() -> None:
    p = Pipe("p")

    @job(triggers=[p])
    async def a() -> None: ...

    with pytest.raises(qanat.ConfigurationError, match=r"pipe 'p'.*not registered"):
        Queue(jobs=[a], storage="memory://")
    with pytest.raises(qanat.ConfigurationError, match="two pipes are named 'p'"):
        Queue(pipes=[p, Pipe("p")], storage="memory://")

    @job
    async def up() -> int:
        return 1

    @job(triggers=[up.into(lambda o: {})])
    async def down() -> None: ...

    with pytest.raises(qanat.ConfigurationError, match=r"output of job 'up'.*not registered"):
        Queue(jobs=[down], storage="memory://")
    with pytest.raises(qanat.ConfigurationError, match=r"up\.into"):
        job(triggers=[up])(lambda: None)
    q = Queue(jobs=[a], pipes=[p], storage="memory://")
    with pytest.raises(qanat.UnknownPipe, match=r"no pipe named 'nope'.*pipes: p"):
        _ = q.pipes.nope
    with pytest.raises(qanat.ConfigurationError, match="not registered on a queue"):
        await Pipe("lonely").send(1)


def test_a_pipe_or_job_a_job_refers_to_must_be_registered() -> None:
    from qanat import CancelOn

    p = Pipe("p")

    @job(triggers=[p])
    async def on_p(x: int) -> None: ...

    @job
    async def up(x: int) -> int:
        return x

    @job(triggers=[up.into(lambda out: {"x": out})])
    async def down(x: int) -> None: ...

    @job(cancel_on=[CancelOn(p)])
    async def stoppable(x: int) -> None: ...

    with pytest.raises(
        qanat.ConfigurationError, match=r"'on_p' is triggered by pipe 'p'.*pipes: none"
    ):
        Queue(jobs=[on_p], storage="memory://")
    with pytest.raises(
        qanat.ConfigurationError, match=r"'down' is triggered by the output of job 'up'.*jobs: down"
    ):
        Queue(jobs=[down], storage="memory://")
    with pytest.raises(
        qanat.ConfigurationError, match=r"'stoppable' is cancelled by events on pipe"
    ):
        Queue(jobs=[stoppable], storage="memory://")
