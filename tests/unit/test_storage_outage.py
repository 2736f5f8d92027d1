"""A worker's checkpoint or finish that meets an unreachable storage (a database restart)
is retried while the worker still owns the execution, instead of failing the execution in
the engine and leaving it to be taken over after its lease (a takeover that counts toward
``max_recoveries``). On memory storage made to fail a given number of writes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from qanat import Queue, job, run
from qanat.errors import StorageError
from qanat.storage import MemoryStorage
from qanat.storage.base import ExecutionFilter


class FlakyStorage(MemoryStorage):
    """Memory storage whose next ``fail[name]`` calls of a method raise StorageError."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def _maybe_fail(self, name: str) -> None:
        if self.fail[name] > 0:
            self.fail[name] -= 1
            self.failed[name] += 1
            raise StorageError(f"cannot reach the database ({name})")

    async def checkpoint(self, *args: Any) -> Any:
        self._maybe_fail("checkpoint")
        return await super().checkpoint(*args)

    async def finish(self, *args: Any) -> Any:
        self._maybe_fail("finish")
        return await super().finish(*args)


@pytest.mark.timeout(30)
async def test_checkpoint_and_finish_are_retried_through_an_outage() -> None:
    runs: Counter[str] = Counter()

    def step(name: str) -> str:
        runs[name] += 1
        return name

    @job
    async def two_steps() -> str:
        a = await run("a", step, "a")
        b = await run("b", step, "b")
        return a + b

    storage = FlakyStorage()
    storage.fail.update({"checkpoint": 2, "finish": 2})
    async with Queue(jobs=[two_steps], storage=storage) as q:
        h = await q.jobs.two_steps.start()
        assert await h.result(timeout=20) == "ab"
        rec = await q.storage.get(h.id)
    assert rec is not None and rec.claims == 1 and rec.recoveries == 0
    assert storage.failed == {"checkpoint": 2, "finish": 2}
    assert runs == {"a": 1, "b": 1}, "a step ran again after its checkpoint was retried"


@pytest.mark.timeout(30)
async def test_an_outage_longer_than_the_lease_still_fails_the_write() -> None:
    @job
    async def one_step() -> str:
        return str(await run("a", str, "a"))

    storage = FlakyStorage()
    storage.fail["checkpoint"] = 1000
    async with Queue(jobs=[one_step], storage=storage, lease="1s") as q:
        h = await q.jobs.one_step.start()
        with pytest.raises(TimeoutError):
            await h.result(timeout=3)  # the execution is left for a takeover, not done
        assert 2 <= storage.failed["checkpoint"] <= 10  # back-off, bounded by the lease
        storage.fail["checkpoint"] = 0


class AckLostStorage(FlakyStorage):
    """The write commits, then the call fails (the connection broke before the answer):
    the worker cannot tell, so its retry repeats a write that is already stored."""

    async def checkpoint(self, *args: Any) -> Any:
        out = await MemoryStorage.checkpoint(self, *args)
        self._maybe_fail("checkpoint")
        return out

    async def finish(self, *args: Any) -> Any:
        out = await MemoryStorage.finish(self, *args)
        self._maybe_fail("finish")
        return out


@pytest.mark.timeout(30)
async def test_checkpoints_that_start_children_are_retried_and_store_each_child_once() -> None:
    @job
    async def kid(n: int) -> int:
        return n * 10

    @job
    async def parent() -> list[int]:
        first = await kid.start(1)
        second = await kid.start(2)
        return [await first.result(), await second.result()]

    for storage in (FlakyStorage(), AckLostStorage()):
        storage.fail["checkpoint"] = 2  # both child starts meet the outage
        async with Queue(jobs=[parent, kid], storage=storage) as q:
            h = await q.jobs.parent.start()
            assert await h.result(timeout=20) == [10, 20]
            rec = await q.storage.get(h.id)
            page = await q.storage.query(ExecutionFilter(job=["kid"]), 10, None)
        assert rec is not None and rec.claims == 1 and rec.recoveries == 0
        assert storage.failed["checkpoint"] == 2
        assert sorted(e.input for e in page.items) == ['{"n":1}', '{"n":2}'], type(storage)
