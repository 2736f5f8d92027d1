"""The storage's clock (``clock``, ``now``, ``at=None``) and the election on top of it
(``lead``), on every backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from qanat.storage import ExecutionRecord, Storage
from qanat.storage.base import LEAD_PREFIX
from qanat.storage.postgres import PostgresStorage
from qanat.storage.sqlcore.dialect import POSTGRES

pytestmark = pytest.mark.timeout(30)


async def wait_for(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_clock_and_now_agree_with_what_a_claim_writes(storage: Storage) -> None:
    before = await storage.now()
    assert abs(storage.clock() - before) < 0.5
    await storage.enqueue([ExecutionRecord(id="a", job="j", input="null", available_at=before - 1)])
    [taken] = await storage.claim("w1", ["j"], 1, 30.0)  # at=None: the storage's now
    after = await storage.now()
    assert taken.available_at is not None
    assert before + 30.0 <= taken.available_at <= after + 30.0
    assert await storage.renew("w1", ["a"], 60.0) == {}  # at=None again
    rec = await storage.get("a")
    assert rec is not None and rec.available_at is not None
    assert after + 60.0 <= rec.available_at <= await storage.now() + 60.0


async def test_one_of_two_storages_leads_and_the_other_takes_over(
    storage: Storage, twin: Storage
) -> None:
    assert await storage.lead("housekeeping", "w1", 0.5)
    assert not await twin.lead("housekeeping", "w2", 0.5)  # w1 leads
    assert await storage.lead("housekeeping", "w1", 0.5)  # and renews
    assert await twin.lead("other-role", "w2", 10.0)  # roles are separate
    # w1 stops renewing (it died): once its lease lapses on the storage's clock, w2
    # takes over, and w1 no longer leads
    await wait_for(lambda: twin.lead("housekeeping", "w2", 10.0))
    assert not await storage.lead("housekeeping", "w1", 10.0)
    # a leader that resigns (a stopping worker) hands over at once
    await twin.resign("housekeeping", "w2")
    assert await storage.lead("housekeeping", "w1", 10.0)


async def test_a_renewing_leader_keeps_its_role(storage: Storage, twin: Storage) -> None:
    assert await storage.lead("housekeeping", "w1", 0.4)
    end = time.monotonic() + 1.2  # three lease lengths
    while time.monotonic() < end:
        assert await storage.lead("housekeeping", "w1", 0.4)
        assert not await twin.lead("housekeeping", "w2", 0.4)
        await asyncio.sleep(0.1)


async def test_the_lease_of_a_role_is_a_step_slot_renewed_with_the_worker(
    storage: Storage, twin: Storage
) -> None:
    # the heartbeat's renew of the leader's executions extends its role too
    await storage.enqueue([ExecutionRecord(id="a", job="j", input="null", available_at=0.0)])
    assert await storage.claim("w1", ["j"], 1, 30.0)
    assert await storage.lead("housekeeping", "w1", 0.3)
    later = await storage.now() + 5.0  # past the role's own lease, within the renew's
    role = LEAD_PREFIX + "housekeeping"
    assert await storage.renew("w1", ["a"], 30.0) == {}
    assert not await twin.acquire_step(role, "w2", "w2", 1, 10.0, later)
    # without it, the role would be free then
    assert await storage.lead("housekeeping", "w1", 0.3)
    assert await twin.acquire_step(role, "w2", "w2", 1, 10.0, later)


def test_postgres_reads_the_server_clock_once_per_transaction(postgres_url: str) -> None:
    conn = PostgresStorage(postgres_url, schema="clock_once")._connect()
    try:
        conn.execute("BEGIN")
        first = POSTGRES.now(conn)
        assert POSTGRES.now(conn) == first  # every time one transaction writes: one instant
        conn.execute("COMMIT")
        outside = POSTGRES.now(conn)  # no transaction (the reader): read each time
        assert POSTGRES.now(conn) > outside > first
        conn.execute("BEGIN")
        assert POSTGRES.now(conn) > outside
        conn.execute("ROLLBACK")
        assert abs(conn.clock.offset) < 0.5  # the server runs on this host
    finally:
        conn.close()
