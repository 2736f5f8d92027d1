"""Cron jobs on memory storage: validation, schedules, ``scheduled_at``, missed ticks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest

from qanat import ConfigurationError, Job, Queue, Skipped, job
from qanat.cron import DUE_GRACE, CronSchedule, tick_key, tick_of
from qanat.storage.memory import MemoryStorage
from support import eventually

EVERY_SECOND = "*/1 * * * * *"


def ts(*args: int, tz: Any = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


# --- definition -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr", ["* * * *", "61 * * * *", "* * * * * * * *", "every minute", "*/0 * * * *"]
)
def test_malformed_expression_fails_at_definition(expr: str) -> None:
    with pytest.raises(ConfigurationError) as info:

        @job(cron=expr)
        async def tick() -> None: ...

    assert repr(expr) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_expression_in_a_list_is_named() -> None:
    with pytest.raises(ConfigurationError, match="'nope'"):
        Job("tick", lambda: None, cron=["*/5 * * * *", "nope"])
    with pytest.raises(ConfigurationError, match="empty"):
        Job("tick", lambda: None, cron=[])


def test_cron_input_that_needs_other_fields_fails_at_definition() -> None:
    async def report(scheduled_at: datetime, region: str, limit: int = 3) -> None: ...

    with pytest.raises(ConfigurationError) as info:
        Job("report", report, cron="0 * * * *")
    msg = str(info.value)
    assert "'report'" in msg and "'region'" in msg and "'limit'" in msg
    assert "'scheduled_at'" not in msg.split("needs")[1]

    class Params(pydantic.BaseModel):
        region: str

    async def with_model(p: Params) -> None: ...

    with pytest.raises(ConfigurationError, match="'region'"):
        Job("with_model", with_model, input=Params, cron="0 * * * *")


def test_scheduled_at_must_be_a_datetime() -> None:
    async def wrong(scheduled_at: str) -> None: ...

    with pytest.raises(ConfigurationError, match="datetime"):
        Job("wrong", wrong, cron="0 * * * *")


def test_other_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="Mars/Olympus"):
        Job("t", lambda: None, cron="0 * * * *", tz="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="tz= only applies"):
        Job("t", lambda: None, tz="UTC")
    with pytest.raises(ConfigurationError, match="cron_missed"):
        Job("t", lambda: None, cron="0 * * * *", cron_missed="sometimes")


def test_valid_cron_jobs() -> None:
    async def a() -> None: ...

    async def b(scheduled_at: datetime) -> None: ...

    class P(pydantic.BaseModel):
        scheduled_at: datetime

    async def c(p: P) -> None: ...

    assert Job("a", a, cron="*/5 * * * *").cron_scheduled_at is False
    assert Job("b", b, cron=["0 9 * * 1-5", "*/10 * * * * *"]).cron_scheduled_at is True
    assert Job("c", c, input=P, cron="0 0 1 * *", tz="Europe/Paris").cron_scheduled_at is True


# --- schedules ----------------------------------------------------------------------------


def test_six_fields_put_seconds_first() -> None:
    s = CronSchedule("t", "*/10 * * * * *", None)
    assert s.next_after(ts(2024, 1, 1, 0, 0, 5)) == ts(2024, 1, 1, 0, 0, 10)
    # seconds first: "30 5 ..." is second 30 of minute 5, not minute 30 second 5
    s = CronSchedule("t", "30 5 * * * *", None)
    assert s.next_after(ts(2024, 1, 1, 0, 0, 0)) == ts(2024, 1, 1, 0, 5, 30)
    five = CronSchedule("t", "5 * * * *", None)
    assert five.next_after(ts(2024, 1, 1, 0, 0, 0)) == ts(2024, 1, 1, 0, 5, 0)


def test_a_list_merges_its_expressions() -> None:
    s = CronSchedule("t", ["0 12 * * *", "30 * * * *"], None)
    assert s.next_after(ts(2024, 1, 1, 11, 45)) == ts(2024, 1, 1, 12, 0)
    assert s.next_after(ts(2024, 1, 1, 12, 0)) == ts(2024, 1, 1, 12, 30)
    ticks, older = s.ticks_between(ts(2024, 1, 1, 10, 0), ts(2024, 1, 1, 12, 30), 10)
    assert [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in ticks] == [
        "10:30",
        "11:30",
        "12:00",
        "12:30",
    ]
    assert older == 0
    ticks, older = s.ticks_between(ts(2024, 1, 1, 10, 0), ts(2024, 1, 1, 12, 30), 2)
    assert len(ticks) == 2 and ticks[-1] == ts(2024, 1, 1, 12, 30) and older == 2


def test_tz_is_the_zone_of_the_expression() -> None:
    paris = ZoneInfo("Europe/Paris")
    s = CronSchedule("t", "0 9 * * *", "Europe/Paris")
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer
    assert s.next_after(ts(2024, 1, 15, 0, 0)) == ts(2024, 1, 15, 8, 0)
    assert s.next_after(ts(2024, 7, 15, 0, 0)) == ts(2024, 7, 15, 7, 0)
    tick = s.at(s.next_after(ts(2024, 7, 15, 0, 0)))
    assert tick.tzinfo == paris and tick.hour == 9
    assert CronSchedule("t", "0 9 * * *", None).at(0).tzinfo == ZoneInfo("UTC")


def test_tick_keys() -> None:
    assert tick_key(1700000000.0) == "cron:1700000000"
    assert tick_of("cron:1700000000") == 1700000000.0
    assert tick_of("other") is None and tick_of(None) is None


# --- running ------------------------------------------------------------------------------


async def test_each_tick_runs_once_with_its_scheduled_at(make_queue: Any) -> None:
    seen: list[datetime] = []

    @job(cron=EVERY_SECOND, tz="Asia/Tokyo")
    async def beat(scheduled_at: datetime) -> str:
        seen.append(scheduled_at)
        return scheduled_at.isoformat()

    q = await make_queue(beat)

    async def three_done() -> bool:
        return len([e async for e in q.executions.list(job="beat", status="completed")]) >= 3

    await eventually(three_done, timeout=10)
    assert all(
        s.tzinfo is not None and s.utcoffset() == ZoneInfo("Asia/Tokyo").utcoffset(s) for s in seen
    )
    assert all(s.microsecond == 0 for s in seen)
    execs = [e.info async for e in q.executions.list(job="beat")]
    keys = [r.key for r in execs if r is not None]
    assert len(keys) == len(set(keys))
    for r in execs:
        assert r is not None and r.key is not None
        tick = tick_of(r.key)
        assert tick is not None and r.created_at >= tick


async def test_two_workers_on_one_storage_enqueue_each_tick_once(make_queue: Any) -> None:
    storage = MemoryStorage()
    count: dict[datetime, int] = {}

    def make() -> Job[Any]:
        async def beat(scheduled_at: datetime) -> None:
            count[scheduled_at] = count.get(scheduled_at, 0) + 1

        return Job("beat", beat, cron=EVERY_SECOND)

    q1 = await make_queue(make(), storage=storage)
    q2 = await make_queue(make(), storage=storage)
    assert q1.worker is not None and q2.worker is not None

    async def done() -> bool:
        return len(count) >= 3

    await eventually(done, timeout=10)
    assert set(count.values()) == {1}


async def test_a_job_without_scheduled_at_takes_no_input(make_queue: Any) -> None:
    runs: list[int] = []

    @job(cron=EVERY_SECOND)
    def plain() -> None:
        runs.append(1)

    await make_queue(plain)

    async def ran() -> bool:
        return bool(runs)

    await eventually(ran, timeout=5)


# --- missed ticks ---------------------------------------------------------------------------


async def _history(storage: MemoryStorage, j: Job[Any], ago: float) -> float:
    """Store a completed tick execution ``ago`` seconds in the past; return its tick."""
    q = Queue(jobs=[j], storage=storage)
    await q.start(worker=False)
    assert j.cron is not None
    tick = j.cron.next_after(datetime.now(UTC).timestamp() - ago - 1)
    rec, _ = j.new_record((), {"scheduled_at": j.cron.at(tick)}, key=tick_key(tick))
    rec.status = "completed"
    rec.available_at = None
    rec.created_at = tick
    rec.completed_at = tick
    await storage.enqueue([rec])
    await q.stop()
    return tick


def _make_missed_job(policy: str | None, seen: list[datetime]) -> Job[Any]:
    async def beat(scheduled_at: datetime) -> None:
        seen.append(scheduled_at)

    # once a minute at second 0: the next regular tick is up to a minute away
    opts = {} if policy is None else {"cron_missed": policy}
    return Job("beat", beat, cron="0 * * * * *", **opts)


async def _by_status(q: Queue) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async for e in q.executions.list(job="beat"):
        assert e.info is not None
        t = tick_of(e.info.key)
        assert t is not None
        out.setdefault(e.info.status, []).append(t)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("policy", [None, "latest", "all", "skip"])
async def test_missed_ticks_policy(make_queue: Any, policy: str | None) -> None:
    storage = MemoryStorage()
    seen: list[datetime] = []
    j = _make_missed_job(policy, seen)
    last = await _history(storage, j, ago=5 * 60 + 30)
    q = await make_queue(j, storage=storage)
    assert j.cron is not None
    start = datetime.now(UTC).timestamp()
    overdue, _ = j.cron.ticks_between(last, start, 100)
    missed = [t for t in overdue if t < start - DUE_GRACE]
    due = [t for t in overdue if t >= start - DUE_GRACE]
    assert len(missed) >= 4

    if policy == "skip":
        expect_run = due
    elif policy == "all":
        expect_run = missed + due
    else:
        expect_run = due or missed[-1:]
    expect_skipped = sorted(set(missed) - set(expect_run))

    async def settled() -> dict[str, list[float]] | None:
        got = await _by_status(q)
        n = len(got.get("completed", [])) - 1  # the history tick
        if n >= len(expect_run) and len(got.get("skipped", [])) == len(expect_skipped):
            return got
        return None

    got = await eventually(settled, timeout=10)
    regular = [t for t in got["completed"] if t > start]  # ticks after start-up, if any
    assert sorted(set(got["completed"]) - {last} - set(regular)) == expect_run
    assert got.get("skipped", []) == expect_skipped
    assert sorted(j.cron.at(t) for t in expect_run) == sorted(
        s for s in seen if s.timestamp() <= start
    )
    for e in [e async for e in q.executions.list(job="beat", status="skipped")]:
        assert e.info is not None and e.info.reason == "missed"
        with pytest.raises(Skipped, match="missed"):
            await e.result()


async def test_restart_does_not_duplicate_ticks(make_queue: Any) -> None:
    storage = MemoryStorage()
    seen: list[datetime] = []
    j = _make_missed_job("all", seen)
    await _history(storage, j, ago=5 * 60 + 30)
    q = await make_queue(j, storage=storage)

    async def ran() -> bool:
        return len(seen) >= 3

    await eventually(ran, timeout=10)
    before = await _by_status(q)
    await q.stop(grace=1)
    q2 = await make_queue(_make_missed_job("all", seen), storage=storage)
    after = await _by_status(q2)
    assert after == before or (
        # a regular tick may have fallen due in between
        sum(map(len, after.values())) - sum(map(len, before.values())) <= 1
    )
    keys = [e.info.key async for e in q2.executions.list(job="beat") if e.info is not None]
    assert len(keys) == len(set(keys))


async def test_first_start_has_nothing_missed(make_queue: Any) -> None:
    seen: list[datetime] = []
    start = datetime.now(UTC).timestamp()
    q = await make_queue(_make_missed_job("all", seen))
    assert q.worker is not None
    got = await _by_status(q)
    assert "skipped" not in got
    assert all(t > start for ts_ in got.values() for t in ts_)
