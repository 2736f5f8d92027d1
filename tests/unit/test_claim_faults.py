"""The claim loop survives storage faults: while storage raises (a database restart, a
network cut) the worker logs, backs off and retries, and claims again once it answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from qanat import StorageError, job
from qanat.storage import MemoryStorage
from support import eventually


@job
async def ping() -> str:
    return "pong"


async def test_claim_loop_backs_off_through_failing_storage_and_recovers(
    make_queue: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="qanat")
    store = MemoryStorage()
    down = True
    calls: list[str] = []
    real_has_ready, real_claim = store.has_ready, store.claim

    async def has_ready(*args: Any) -> bool:
        calls.append("has_ready")
        if down:
            raise StorageError("cannot connect to the database (test)")
        return await real_has_ready(*args)

    async def claim(*args: Any) -> Any:
        calls.append("claim")
        if down:
            raise StorageError("cannot connect to the database (test)")
        return await real_claim(*args)

    store.has_ready = has_ready  # type: ignore[method-assign]
    store.claim = claim  # type: ignore[method-assign]
    await make_queue(ping, storage=store)
    # enqueued by a client (as from another process): the worker must claim it
    client = await make_queue(ping, storage=store, worker=False)
    h = await client.jobs.ping.start()

    async def failed_twice() -> bool:
        return sum(1 for r in caplog.records if "claiming executions failed" in r.message) >= 2

    await eventually(failed_twice, timeout=10)
    before = len(calls)
    down = False
    assert await h.result(timeout=15) == "pong"
    assert "claim" in calls[before:]
    # backed off, not a busy loop: two failures take 0.5 s + 1 s
    assert before < 20, calls


@pytest.mark.parametrize("blind", [False, True])
async def test_a_change_makes_the_worker_ask_first_unless_the_storage_claims_without_asking(
    make_queue: Any, blind: bool
) -> None:
    # Redis: a claim that finds nothing costs what has_ready costs, so a worker woken by
    # a change claims at once (one round trip sooner); elsewhere it asks first
    store = MemoryStorage()
    store.claims_without_asking = blind
    calls: list[str] = []
    real_has_ready, real_claim = store.has_ready, store.claim

    async def has_ready(*args: Any) -> bool:
        calls.append("has_ready")
        return await real_has_ready(*args)

    async def claim(*args: Any) -> Any:
        calls.append("claim")
        return await real_claim(*args)

    store.has_ready = has_ready  # type: ignore[method-assign]
    store.claim = claim  # type: ignore[method-assign]
    await make_queue(ping, storage=store)
    client = await make_queue(ping, storage=store, worker=False)
    asked = 0
    for _ in range(3):
        calls.clear()
        h = await client.jobs.ping.start()
        assert await h.result(timeout=15) == "pong"
        assert "claim" in calls
        asked += calls.count("has_ready")
    # (a round's claim may also come from the 0.25 s fallback poll, which never asks)
    assert (asked == 0) if blind else (asked > 0), asked


async def test_work_the_worker_adopted_is_not_looked_for_by_a_claim(make_queue: Any) -> None:
    # ``run()`` in a process with a worker hands the execution to that worker as it is
    # stored (adopted): no claim should follow each one, finding nothing
    store = MemoryStorage()
    claims: list[int] = []
    real_claim = store.claim

    async def claim(*args: Any) -> Any:
        got = await real_claim(*args)
        claims.append(len(got))
        return got

    store.claim = claim  # type: ignore[method-assign]
    q = await make_queue(ping, storage=store)
    await q.jobs.ping.run()
    claims.clear()
    for _ in range(30):
        assert await q.jobs.ping.run() == "pong"
    assert len(claims) < 10, claims  # was one empty claim per run
