"""Operations queued together and run in one form (see ``sqlcore/writer.py``), run
against every backend: a fan-out's child starts (checkpoints of one execution, each
with a child) and a parent's reads of its children give what one-by-one calls give,
fenced the same way."""

from __future__ import annotations

import asyncio

from qanat.storage import Checkpoint, ExecutionRecord, StepRecord, Storage
from qanat.storage.base import now

T0 = 1_700_000_000.0
LEASE = 30.0


def rec(ident: str, job: str = "j", key: str | None = None) -> ExecutionRecord:
    return ExecutionRecord(
        id=ident, job=job, input="{}", created_at=T0, run_at=T0, available_at=T0, key=key
    )


def step(eid: str, key: str) -> StepRecord:
    return StepRecord(eid, key, "child", key, "completed", '"ok"', started_at=T0, finished_at=T0)


async def claimed(storage: Storage, ident: str = "p", owner: str = "w1") -> None:
    await storage.enqueue([rec(ident)])
    [got] = await storage.claim(owner, ["j"], 1, LEASE, now())
    assert (got.id, got.owner) == (ident, owner)


async def test_child_starts_queued_together_store_every_step_and_child(storage: Storage) -> None:
    await claimed(storage)
    n = 30
    whys = await asyncio.gather(
        *(
            storage.checkpoint("p", "w1", Checkpoint(step("p", f"c{i}"), [rec(f"k{i}", "kid")]))
            for i in range(n)
        )
    )
    assert whys == [None] * n
    assert sorted(s.key for s in await storage.steps("p")) == sorted(f"c{i}" for i in range(n))
    kids = await storage.get_many([f"k{i}" for i in range(n)])
    assert sorted(k.id for k in kids) == sorted(f"k{i}" for i in range(n))
    assert {k.status for k in kids} == {"pending"}


async def test_child_starts_of_a_lost_owner_store_nothing_beside_the_owners(
    storage: Storage,
) -> None:
    await claimed(storage)
    mine = [Checkpoint(step("p", f"m{i}"), [rec(f"m{i}", "kid")]) for i in range(3)]
    theirs = [Checkpoint(step("p", f"s{i}"), [rec(f"s{i}", "kid")]) for i in range(3)]
    whys = await asyncio.gather(
        *(storage.checkpoint("p", "w1", cp) for cp in mine),
        *(storage.checkpoint("p", "stale", cp) for cp in theirs),
    )
    assert whys == [None] * 3 + ["lost"] * 3
    assert sorted(s.key for s in await storage.steps("p")) == ["m0", "m1", "m2"]
    assert [r.id for r in await storage.get_many([f"s{i}" for i in range(3)])] == []
    assert len(await storage.get_many([f"m{i}" for i in range(3)])) == 3


async def test_keyed_children_queued_together_keep_their_key_rule(storage: Storage) -> None:
    await claimed(storage)
    await storage.enqueue([rec("old", "kid", key="same")])
    whys = await asyncio.gather(
        storage.checkpoint("p", "w1", Checkpoint(step("p", "a"), [rec("new", "kid", key="same")])),
        storage.checkpoint("p", "w1", Checkpoint(step("p", "b"), [rec("free", "kid")])),
    )
    assert whys == [None, None]
    assert await storage.get("new") is None  # the key was taken: the existing one stands
    assert await storage.get("free") is not None
    assert sorted(s.key for s in await storage.steps("p")) == ["a", "b"]


async def test_gets_queued_together_answer_each_with_its_own_record(storage: Storage) -> None:
    await storage.enqueue([rec(f"e{i}") for i in range(20)])
    ids = [f"e{i}" for i in range(20)] + ["missing", "e3"]
    got = await asyncio.gather(*(storage.get(i) for i in ids))
    assert [None if r is None else r.id for r in got] == [*ids[:20], None, "e3"]
    assert got[3] is not got[21]  # each caller owns its record
