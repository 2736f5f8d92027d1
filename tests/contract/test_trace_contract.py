"""``ExecutionRecord.trace``: the caller's trace context is stored with an execution and
comes back from every read, a claim and a retry included (SPEC §14)."""

from __future__ import annotations

import json

from test_storage_contract import LEASE, rec

from qanat.storage import ExecutionFilter, Finish, Storage
from qanat.storage.base import now

TRACE = json.dumps({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})


async def test_trace_round_trips_through_enqueue_claim_query_and_retry(storage: Storage) -> None:
    await storage.enqueue([rec("t", trace=TRACE), rec("u")])
    got = await storage.get("t")
    assert got is not None and got.trace == TRACE
    untraced = await storage.get("u")
    assert untraced is not None and untraced.trace is None

    claimed = {r.id: r for r in await storage.claim("w1", ["j"], 2, LEASE, now())}
    assert claimed["t"].trace == TRACE and claimed["u"].trace is None

    page = await storage.query(ExecutionFilter(ids=["t"]), 10, None)
    assert [r.trace for r in page.items] == [TRACE]

    retry = Finish("pending", error='{"type": "ValueError"}', attempt=2, available_at=now())
    assert await storage.finish("t", "w1", retry)
    again = await storage.claim("w2", ["j"], 1, LEASE, now())
    assert [(r.id, r.attempt, r.trace) for r in again] == [("t", 2, TRACE)]
