"""Queue(max_payload=) (SPEC §12): a payload over the limit is refused at the call that
would store it, with an error naming what it is, its size and the limit; nothing stored
changes. Memory and SQLite storage."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import qanat
from qanat import Job, Pipe, Queue, codec, job, run
from qanat.sizes import check_size
from support import eventually

LIMIT = "1KB"
BIG = "x" * 2000  # 2 KB of JSON once quoted: over the limit
SMALL = "x" * 100


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    queues: list[Queue] = []

    async def make(jobs: list[Job[Any]], pipes: list[Pipe[Any]] = (), worker: bool = True) -> Queue:  # type: ignore[assignment]
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/q.db"
        q = Queue(jobs=jobs, pipes=list(pipes), storage=url, max_payload=LIMIT)
        await q.start(worker=worker)
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.stop(grace=1)


async def _stored(q: Queue) -> list[str]:
    return sorted([e.id async for e in q.executions.list()])


def test_check_size_counts_utf8_bytes() -> None:
    assert check_size("a" * 1024, 1024, "x") == "a" * 1024
    assert check_size("é" * 100, 1024, "x") == "é" * 100  # 4 bytes max each: fits
    assert check_size("é" * 512, 1024, "x") == "é" * 512  # 1024 bytes exactly
    with pytest.raises(qanat.PayloadTooLarge, match=r"the thing is 1.002 KB \(1,026 bytes"):
        check_size("é" * 513, 1024, "the thing")
    with pytest.raises(qanat.PayloadTooLarge, match=r"over the limit of 1 KB \(Queue\(max_pay"):
        check_size("a" * 1025, 1024, "the thing")
    assert check_size("a" * 10**6, None, "x")  # no limit


async def test_inputs_over_the_limit_are_refused_at_every_enqueue(make_queue: Any) -> None:
    @job
    async def echo(s: str) -> str:
        return s

    q = await make_queue([echo], worker=False)
    await q.jobs.echo.start(s=SMALL)
    before = await _stored(q)
    message = (
        r"the input of job 'echo' is 1\.961 KB \(2,008 bytes of JSON\), over the limit of 1 KB"
    )
    with pytest.raises(qanat.PayloadTooLarge, match=message):
        await q.jobs.echo.start(s=BIG)
    with pytest.raises(qanat.PayloadTooLarge, match=message):
        await q.jobs.echo.start_many([{"s": SMALL}, {"s": BIG}])
    with pytest.raises(qanat.PayloadTooLarge, match=message):
        await q.jobs.echo.run(s=BIG)
    assert await _stored(q) == before


async def test_child_start_over_the_limit_fails_the_parent(make_queue: Any) -> None:
    @job
    async def child(s: str) -> str:
        return s

    @job(retry=3)
    async def parent() -> str:
        await child.start(s=BIG)
        return "unreachable"

    q = await make_queue([child, parent])
    h = await q.jobs.parent.start()
    with pytest.raises(qanat.PayloadTooLarge, match="the input of job 'child' is"):
        await h.result(timeout=10)
    assert (await h.record()).attempt == 1  # not retried: it would be as large again
    assert [e.job async for e in q.executions.list()] == ["parent"]


async def test_event_data_over_the_limit_is_refused_at_send(make_queue: Any) -> None:
    notes = Pipe("notes")
    q = await make_queue([], [notes], worker=False)
    with pytest.raises(
        qanat.PayloadTooLarge, match=r"the data of pipe 'notes' is 1.955 KB \(2,002 bytes"
    ):
        await q.pipes.notes.send(BIG)
    assert [e async for e in q.events.list()] == []
    await q.pipes.notes.send(SMALL)
    assert len([e async for e in q.events.list()]) == 1


async def test_triggered_inputs_over_the_limit_are_failed_triggers(make_queue: Any) -> None:
    notes = Pipe("notes")

    @job(triggers=[notes.into(lambda s: {"s": s * 20})])
    async def grow(s: str) -> str:
        return s

    @job
    async def make_big() -> str:
        return SMALL * 9  # 902 bytes of output: fits; the trigger's input does not

    @job(triggers=[make_big.into(lambda out: {"s": out + out})])
    async def double(s: str) -> str:
        return s

    q = await make_queue([grow, make_big, double], [notes])
    info = await q.pipes.notes.send(SMALL)  # the event fits; grow's input would not
    assert info.executions == []
    [failed] = info.failed
    assert failed.job == "grow" and "PayloadTooLarge" in failed.error
    assert "the input of job 'grow' is" in failed.error
    h = await q.jobs.make_big.start()
    assert await h.result(timeout=10) == SMALL * 9

    async def logged() -> list[str]:
        return [ln.message for ln in await h.logs() if "trigger of job 'double'" in ln.message]

    [line] = await eventually(logged)
    assert "the input of job 'double' is" in line
    assert [e.job async for e in q.executions.list(job="double")] == []


async def test_step_result_over_the_limit_fails_the_step_without_retry(make_queue: Any) -> None:
    calls: list[int] = []

    def fetch() -> str:
        calls.append(1)
        return BIG

    @job(retry=1)
    async def reader() -> str:
        try:
            await run(qanat.Step("fetch", retry=5, backoff=0), fetch)
        except qanat.PayloadTooLarge as exc:
            return f"caught: {exc}"
        return "stored"

    q = await make_queue([reader])
    out = await (await q.jobs.reader.start()).result(timeout=10)
    assert out.startswith("caught: the result of step 'fetch' is 1.955 KB (2,002 bytes")
    assert calls == [1]  # one attempt of five: retrying cannot make it smaller


async def test_output_over_the_limit_fails_the_execution(make_queue: Any) -> None:
    attempts: list[int] = []

    @job(retry=3)
    async def big() -> str:
        attempts.append(1)
        return BIG

    q = await make_queue([big])
    h = await q.jobs.big.start()
    with pytest.raises(
        qanat.PayloadTooLarge, match=r"the output of job 'big' is 1.955 KB \(2,002 bytes"
    ):
        await h.result(timeout=10)
    rec = await h.record()
    assert (rec.status, rec.attempt, rec.output, len(attempts)) == ("failed", 1, None, 1)


@pytest.mark.parametrize(
    "value",
    [
        {"blob": "x" * (2 << 20), "n": 1},
        ["é" * (2 << 20)],
        {"nested": [{"s": '\u2028"\\' * (1 << 19)}], "when": datetime(2024, 1, 1, tzinfo=UTC)},
        {"raw": b"\x00\xff" * (1 << 20)},
        "\ud800 lone surrogate " + "y" * (2 << 20),
    ],
    ids=["ascii", "non-ascii", "escapes-and-tags", "bytes", "surrogate"],
)
def test_big_payloads_round_trip(value: Any) -> None:
    text = codec.dumps(value)
    assert codec.loads(text) == value
    if isinstance(value, list):  # non-ASCII text stays UTF-8, as orjson writes it
        assert "é" in text


def test_big_payloads_encode_and_decode_in_about_their_size() -> None:
    """orjson reserves ~10x a str it writes and ~12x the text it parses; the codec hands
    big payloads to the standard library's JSON instead (SPEC §12: an execution costs
    about its payload)."""
    blob = {"blob": "x" * (20 << 20)}
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        text = codec.dumps(blob)
        encode_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert codec.loads(text) == blob
        decode_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert encode_peak <= 2.5 * len(text), encode_peak / len(text)
    assert decode_peak <= 1.5 * len(text), decode_peak / len(text)
