"""The watcher behind ``result()``/``wait()``: a wait that starts the watcher is served by
its first read (one read, not a ``get`` then the watcher's ``get_many``), and that read
still says what a ``get`` would have: the storage's error, or that the execution does
not exist. Waits that join a running watcher are read together in its next read; after
a change, what was read already is read again with ``finished_among`` (only finished
ones come back). On memory storage that counts and can fail its reads."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from qanat import Queue, job
from qanat.errors import QanatError, StorageError
from qanat.storage import MemoryStorage
from qanat.storage.base import FINISHED_STATUSES, ExecutionRecord


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.broken = False
        self.asked: list[int] = []

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        self.reads["get"] += 1
        return await super().get(execution_id)

    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        self.reads["get_many"] += 1
        if self.broken:
            raise StorageError("cannot reach the database (get_many)")
        return await super().get_many(ids, payloads=payloads)

    async def finished_among(self, ids: Sequence[str]) -> list[ExecutionRecord]:
        self.reads["finished_among"] += 1
        self.asked.append(len(ids))
        # not through our get_many (the base class's way): count each read once
        found = await MemoryStorage.get_many(self, ids)
        return [r for r in found if r.status in FINISHED_STATUSES]


@job
async def double(x: int) -> int:
    return 2 * x


async def test_a_wait_that_starts_the_watcher_costs_one_read() -> None:
    store = CountingStorage()
    client = Queue(jobs=[double], storage=store)  # no worker of its own
    await client.start(worker=False)
    try:
        e = await client.jobs.double.start(4)
        store.reads.clear()
        waiting = asyncio.ensure_future(e.result(timeout=10))
        for _ in range(100):  # until the watcher's first read is done (memory: no I/O)
            await asyncio.sleep(0)
        assert not waiting.done()
        assert store.reads == Counter({"get_many": 1})  # not a get, then a get_many
        async with Queue(jobs=[double], storage=store):
            assert await waiting == 8
    finally:
        await client.stop()


async def test_the_first_read_says_what_a_get_would_have() -> None:
    store = CountingStorage()
    q = Queue(jobs=[double], storage=store)
    await q.start(worker=False)
    try:
        with pytest.raises(QanatError, match="execution nope does not exist"):
            await q.handle_of("nope", "double").result(timeout=10)
        e = await q.jobs.double.start(1)
        store.broken = True
        with pytest.raises(StorageError, match="cannot reach the database"):
            await e.result(timeout=10)
        store.broken = False
        # two waiters, the second joining the running watcher (read in its next read)
        first = asyncio.ensure_future(e.result(timeout=10))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(e.result(timeout=10))
        worker = Queue(jobs=[double], storage=store)
        async with worker:
            assert await asyncio.gather(first, second) == [2, 2]
    finally:
        await q.stop()


async def test_waits_that_join_a_running_watcher_share_one_read() -> None:
    store = CountingStorage()
    q = Queue(jobs=[double], storage=store)
    await q.start(worker=False)
    try:
        first = await q.jobs.double.start(0)
        waits = [asyncio.ensure_future(first.result(timeout=10))]
        for _ in range(100):  # the watcher's first read is done: it now runs, idle
            await asyncio.sleep(0)
        handles = [await q.jobs.double.start(i) for i in range(1, 51)]
        store.reads.clear()
        waits += [asyncio.ensure_future(h.result(timeout=10)) for h in handles]
        for _ in range(100):
            await asyncio.sleep(0)
        # 50 waits joined the running watcher: one read of the new ones, not a get each
        assert store.reads == Counter({"get_many": 1}), store.reads
        missing = asyncio.ensure_future(q.handle_of("nope", "double").result(timeout=10))
        with pytest.raises(QanatError, match="execution nope does not exist"):
            await missing
        async with Queue(jobs=[double], storage=store):
            assert await asyncio.gather(*waits) == [2 * i for i in range(51)]
    finally:
        await q.stop()


async def test_after_a_change_waits_already_read_are_read_again_as_finished_among() -> None:
    store = CountingStorage()
    q = Queue(jobs=[double], storage=store)
    await q.start(worker=False)
    try:
        handles = [await q.jobs.double.start(i) for i in range(20)]
        waits = [asyncio.ensure_future(h.result(timeout=10)) for h in handles]
        for _ in range(100):  # the watcher's first read (all 20 unread) is done
            await asyncio.sleep(0)
        assert store.reads == Counter({"get_many": 1}), store.reads
        store.reads.clear()
        q.ticker.fire()  # a change: the 20 are read again, as finished_among
        for _ in range(100):
            await asyncio.sleep(0)
        assert store.reads == Counter({"finished_among": 1}), store.reads
        assert store.asked == [20]
        async with Queue(jobs=[double], storage=store):
            assert await asyncio.gather(*waits) == [2 * i for i in range(20)]
    finally:
        await q.stop()


release = asyncio.Event()


@job
async def held() -> str:
    await release.wait()
    return "done"


async def test_a_wait_for_an_execution_running_here_reads_nothing() -> None:
    store = CountingStorage()
    release.clear()
    async with Queue(jobs=[held], storage=store) as q:
        e = await q.jobs.held.start()
        assert q.worker is not None
        for _ in range(100):  # until this process's worker runs it
            if e.id in q.worker.active:
                break
            await asyncio.sleep(0)
        assert e.id in q.worker.active
        store.reads.clear()
        waiting = asyncio.ensure_future(e.result(timeout=10))
        for _ in range(100):
            await asyncio.sleep(0)
        assert not waiting.done()
        assert store.reads == Counter(), store.reads  # its finish here will say
        release.set()
        assert await waiting == "done"
        assert store.reads["get_many"] == 0 and store.reads["get"] == 0, store.reads


@job
async def naps_long() -> str:
    from qanat import sleep

    await sleep("1h")  # leaves the worker unfinished; finished elsewhere below
    return "rested here"


async def test_a_wait_for_an_execution_that_leaves_here_unfinished_is_followed() -> None:
    """No watcher runs while the execution runs here; when it leaves this worker
    without finishing (a durable sleep), the worker hands its wait to the watcher, which
    then sees it finished by another worker."""
    from qanat.storage.base import COMPLETED, Finish, now

    store = CountingStorage()
    async with Queue(jobs=[naps_long], storage=store) as q:
        e = await q.jobs.naps_long.start()
        assert q.worker is not None and e.id in q.worker.active  # adopted: it runs here
        waiting = asyncio.ensure_future(e.result(timeout=10))
        await asyncio.sleep(0)
        assert q.watcher._task is None or q.watcher._task.done()  # nothing to read yet
        for _ in range(1000):  # until it sleeps (no longer held here)
            if e.id not in q.worker.active:
                break
            await asyncio.sleep(0.01)
        assert e.id not in q.worker.active, "the execution never went to sleep"
        # another worker takes it when due and completes it
        [taken] = await store.claim("elsewhere", ["naps_long"], 1, 30.0, at=now() + 7200)
        assert await store.finish(taken.id, "elsewhere", Finish(COMPLETED, output='"there"'))
        assert await waiting == "there"
