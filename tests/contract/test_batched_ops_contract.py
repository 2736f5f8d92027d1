"""Operations queued together and run in one form (see ``sqlcore/writer.py``), run
against every backend: a fan-out's child starts (checkpoints of one execution, each
with a child) and a parent's reads of its children give what one-by-one calls give,
fenced the same way."""

from __future__ import annotations

import asyncio

from qanat.storage import Checkpoint, ExecutionRecord, Finish, StepRecord, Storage
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


async def test_finished_among_gives_the_finished_children_whole_and_leaves_the_rest(
    storage: Storage,
) -> None:
    await claimed(storage)
    kids = [rec(f"f{i}", "kid") for i in range(6)]
    kids += [ExecutionRecord(id="later", job="kid", input="{}", created_at=T0, run_at=T0 + 3600)]
    for kid in kids:
        kid.parent_id = "p"
    await storage.enqueue(kids)
    taken = await storage.claim("w2", ["kid"], 4, LEASE, now())
    assert len(taken) == 4
    a, b, c, running = (r.id for r in sorted(taken, key=lambda r: r.id))
    assert await storage.finish(a, "w2", Finish("completed", output='{"n": 1}'))
    assert await storage.finish(b, "w2", Finish("failed", error='{"type": "E"}'))
    await storage.cancel([c], "enough")
    ids = [k.id for k in kids] + ["never-stored"]
    got = {r.id: r for r in await storage.finished_among(ids)}
    assert sorted(got) == sorted([a, b, c])
    assert (got[a].status, got[a].output) == ("completed", '{"n": 1}')
    assert (got[b].status, got[b].error) == ("failed", '{"type": "E"}')
    assert (got[c].status, got[c].reason) == ("cancelled", "enough")
    assert got[a].input == "{}"  # with its payloads, as get_many gives it
    assert running not in got
    assert await storage.finished_among([]) == []


async def test_children_finishing_together_wake_their_waiting_parent(storage: Storage) -> None:
    await claimed(storage)
    kids = [rec(f"w{i}", "kid") for i in range(5)]
    for kid in kids:
        kid.parent_id = "p"
    await storage.enqueue(kids)
    assert await storage.suspend("p", "w1", "waiting", None)
    taken = await storage.claim("w2", ["kid"], 5, LEASE, now())
    assert len(taken) == 5
    before = now()
    done = await asyncio.gather(
        *(
            storage.finish(k.id, "w2", Finish("completed", output=str(i)))
            for i, k in enumerate(taken)
        )
    )
    assert done == [True] * 5
    [parent] = await storage.get_many(["p"])
    assert parent.status == "waiting" and parent.owner is None
    assert parent.available_at is not None and parent.available_at <= now() + 1
    assert parent.available_at >= before - 5  # due now: woken, not left asleep
    [again] = await storage.claim("w1", ["j"], 1, LEASE, now())
    assert again.id == "p"
