"""Fencing and poison-pill counts, run against every backend (see conftest.py).

A worker whose claim was taken over (its lease lapsed while it was frozen, or its
process was declared dead) must not be able to write anything for that execution: not
a step, a finish, a progress value, a log line, a wait or a mark. And the claims that
take an execution from such an owner are counted (``recoveries``) until a checkpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any

from qanat.storage import Checkpoint, ExecutionRecord, Finish, LogRecord, StepRecord, Storage
from qanat.storage.base import Waiter, now

T0 = 1_700_000_000.0  # a fixed past moment: everything created "then" is due now
LEASE = 30.0


def rec(ident: str, job: str = "j") -> ExecutionRecord:
    return ExecutionRecord(id=ident, job=job, input="{}", created_at=T0, run_at=T0, available_at=T0)


def step(eid: str, key: str, result: str = '"ok"') -> StepRecord:
    return StepRecord(eid, key, "run", key, "completed", result, started_at=T0, finished_at=T0)


async def taken_over(storage: Storage, ident: str = "a") -> float:
    """``ident`` claimed by ``stale``, whose lease then lapses, and taken by ``fresh``."""
    at = now()
    await storage.enqueue([rec(ident)])
    [first] = await storage.claim("stale", ["j"], 1, LEASE, at)
    assert first.owner == "stale"
    later = at + LEASE + 1  # the stale worker's lease has lapsed by then
    [second] = await storage.claim("fresh", ["j"], 1, LEASE, later)
    assert second.owner == "fresh"
    return later


async def snapshot(storage: Storage, ident: str) -> tuple[Any, ...]:
    return (
        await storage.get(ident),
        await storage.steps(ident),
        await storage.logs(ident),
        await storage.waiter(ident, "wait:p"),
    )


async def stale_writes_are_refused(storage: Storage, ident: str, at: float) -> None:
    """Every write path of a worker, tried by ``stale``: each refused, nothing changed."""
    before = await snapshot(storage, ident)
    late = step(ident, "s", '"stale"')
    assert not await storage.set_progress(ident, "stale", '{"pct":50,"message":"stale"}')
    assert await storage.append_logs("stale", [LogRecord(ident, at, "stale line")]) == 0
    assert await storage.checkpoint(ident, "stale", Checkpoint(late, [rec("child")])) is not None
    assert not await storage.enter_step(ident, "stale", "s")
    assert not await storage.mark(ident, "stale", "waiting")
    waiter = Waiter(ident, "wait:p", "p", None, None, at)
    state = await storage.wait(ident, "stale", waiter, None, at)
    assert state.stop is not None and not state.suspended
    assert await storage.end_wait(ident, "stale", Checkpoint(late)) is not None
    assert not await storage.suspend(ident, "stale", "waiting", at + 100)
    assert not await storage.finish(ident, "stale", Finish("completed", output='"stale"'))
    fin = Finish(
        "pending", error='"e"', attempt=2, available_at=at, logs=[LogRecord(ident, at, "x")]
    )
    assert not await storage.finish(ident, "stale", fin)
    await storage.release("stale", [ident])
    assert await storage.renew("stale", [ident], LEASE, at) == {ident: "lost"}
    assert await snapshot(storage, ident) == before
    assert await storage.get("child") is None


async def test_stale_owner_can_write_nothing_while_the_new_owner_runs(storage: Storage) -> None:
    at = await taken_over(storage)
    mine = Checkpoint(step("a", "s", '"fresh"'))
    assert await storage.checkpoint("a", "fresh", mine) is None
    assert await storage.set_progress("a", "fresh", '{"pct":50,"message":"fresh"}')
    assert await storage.append_logs("fresh", [LogRecord("a", at, "fresh line")]) == 1
    await stale_writes_are_refused(storage, "a", at)
    got = await storage.get("a")
    assert got is not None and (got.owner, got.status) == ("fresh", "running")


async def test_stale_owner_can_write_nothing_after_the_new_owner_finished(
    storage: Storage,
) -> None:
    at = await taken_over(storage)
    mine = Checkpoint(step("a", "s", '"fresh"'))
    assert await storage.checkpoint("a", "fresh", mine) is None
    assert await storage.set_progress("a", "fresh", '{"pct":50,"message":"fresh"}')
    assert await storage.finish("a", "fresh", Finish("completed", output='"fresh"'))
    await stale_writes_are_refused(storage, "a", at)
    got = await storage.get("a")
    assert got is not None
    assert (got.status, got.output, got.progress) == (
        "completed",
        '"fresh"',
        '{"pct":50,"message":"fresh"}',
    )
    assert [s.result for s in await storage.steps("a")] == ['"fresh"']


async def test_owner_none_writes_progress_and_logs_under_no_claim(storage: Storage) -> None:
    await storage.enqueue([rec("a")])
    await storage.claim("w1", ["j"], 1, LEASE, now())
    assert await storage.finish("a", "w1", Finish("completed", output="1"))
    assert not await storage.set_progress("a", "w1", '{"pct":1}')  # the claim is over
    assert await storage.set_progress("a", None, '{"pct":100}')
    assert await storage.append_logs("w1", [LogRecord("a", T0, "refused")]) == 0
    assert await storage.append_logs(None, [LogRecord("a", T0, "from a hook")]) == 1
    done = await storage.get("a")
    assert done is not None and done.progress == '{"pct":100}'
    assert [g.message for g in await storage.logs("a")] == ["from a hook"]


async def test_append_logs_keeps_only_the_lines_of_owned_executions(storage: Storage) -> None:
    await storage.enqueue([rec("mine"), rec("theirs", job="k")])
    await storage.claim("w1", ["j"], 1, LEASE, now())
    await storage.claim("w2", ["k"], 1, LEASE, now())
    lines = [LogRecord("mine", T0, "1"), LogRecord("theirs", T0, "2"), LogRecord("mine", T0, "3")]
    assert await storage.append_logs("w1", lines) == 2
    assert [g.message for g in await storage.logs("mine")] == ["1", "3"]
    assert await storage.logs("theirs") == []


async def test_finish_writes_its_log_lines_in_its_transaction(storage: Storage) -> None:
    await storage.enqueue([rec("a"), rec("b")])
    await storage.claim("w1", ["j"], 2, LEASE, now())
    line = LogRecord("a", T0, "trigger of job 'x' failed: boom")
    assert await storage.finish("a", "w1", Finish("completed", output="1", logs=[line]))
    assert await storage.logs("a") == [line]
    retry = Finish(
        "pending", error='"e"', attempt=2, available_at=T0, logs=[LogRecord("b", T0, "r")]
    )
    assert await storage.finish("b", "w1", retry)
    assert [g.message for g in await storage.logs("b")] == ["r"]


# --- recoveries ---------------------------------------------------------------------------


async def recoveries(storage: Storage, ident: str = "a") -> tuple[int, str | None]:
    got = await storage.get(ident)
    assert got is not None
    return got.recoveries, got.step_in_flight


async def test_claims_from_owners_that_never_let_go_are_counted(storage: Storage) -> None:
    await storage.enqueue([rec("a")])
    [first] = await storage.claim("w1", ["j"], 1, LEASE, now())
    assert first.recoveries == 0
    await storage.release("w1", ["a"])  # a graceful release is not a recovery
    [again] = await storage.claim("w2", ["j"], 1, LEASE, now())
    assert again.recoveries == 0
    assert await storage.suspend("a", "w2", "waiting", now())  # nor is a suspend
    [resumed] = await storage.claim("w3", ["j"], 1, LEASE, now())
    assert resumed.recoveries == 0
    # w3's lease lapses: the claim that takes it over counts one
    later = now() + LEASE + 1
    [lapsed] = await storage.claim("w4", ["j"], 1, LEASE, later)
    assert lapsed.recoveries == 1 and await recoveries(storage) == (1, None)
    # w4 is declared dead on its host: the claim after expire_owner counts one more
    assert await storage.enter_step("a", "w4", "boom")
    assert await storage.expire_owner("w4", later) == 1
    [reclaimed] = await storage.claim("w5", ["j"], 1, LEASE, later)
    assert (reclaimed.recoveries, reclaimed.step_in_flight) == (2, "boom")


async def test_a_checkpoint_resets_the_count(storage: Storage) -> None:
    at = await taken_over(storage)
    assert await storage.enter_step("a", "fresh", "s")
    assert await recoveries(storage) == (1, "s")
    assert await storage.checkpoint("a", "fresh", Checkpoint(step("a", "s"))) is None
    assert await recoveries(storage) == (0, None)
    [again] = await storage.claim("third", ["j"], 1, LEASE, at + LEASE + 1)
    assert again.recoveries == 1


async def test_checkpoints_committed_together_reset_each_count(storage: Storage) -> None:
    at = now()
    ids = ["a", "b", "c"]
    await storage.enqueue([rec(i) for i in ids])
    await storage.claim("stale", ["j"], 3, LEASE, at)
    got = await storage.claim("fresh", ["j"], 3, LEASE, at + LEASE + 1)
    assert sorted((r.id, r.recoveries) for r in got) == [(i, 1) for i in ids]
    # at once: SQLite commits these as one group (its bulk checkpoint path)
    whys = await asyncio.gather(
        *(storage.checkpoint(i, "fresh", Checkpoint(step(i, "s"))) for i in ids[:2]),
        storage.checkpoint("c", "stale", Checkpoint(step("c", "s"))),
    )
    assert whys == [None, None, "lost"]
    assert [await recoveries(storage, i) for i in ids] == [(0, None), (0, None), (1, None)]


async def test_a_retry_and_a_restart_reset_the_count(storage: Storage) -> None:
    at = await taken_over(storage)
    assert await storage.enter_step("a", "fresh", "s")
    retry = Finish("pending", error='"e"', attempt=2, available_at=at)
    assert await storage.finish("a", "fresh", retry)
    assert await recoveries(storage) == (0, None)
    await storage.claim("w1", ["j"], 1, LEASE, at)
    [taken] = await storage.claim("w2", ["j"], 1, LEASE, at + 2 * LEASE)
    assert taken.recoveries == 1
    assert await storage.enter_step("a", "w2", "s")
    assert await storage.finish("a", "w2", Finish("failed", error='"e"'))
    restarted = await storage.restart("a", at)
    assert restarted is not None and (restarted.recoveries, restarted.step_in_flight) == (0, None)
    assert await recoveries(storage) == (0, None)
