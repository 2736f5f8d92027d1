"""Calls of one Redis operation made while one is on its way go together in
``<name>_many`` calls of at most ``MAX_ITEMS`` (``storage/redis/scripts.py``), each
caller getting its own answer; a lone call goes alone. A stand-in for the scripts
records the calls (the real ones run in the contract suite on a real Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

from qanat.storage.redis.scripts import MAX_ITEMS, Batch


class Recorder:
    """Answers ``finish`` with its argument and ``finish_many`` with each item's."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    async def run(self, name: str, args: list[Any]) -> Any:
        await asyncio.sleep(0)  # on its way: the calls made meanwhile wait
        if self.fail:
            raise ConnectionError("server gone")
        if name.endswith("_many"):
            items, i = [], 0
            while i < len(args):
                n = int(args[i])
                items.append(args[i + 1 : i + 1 + n])
                i += n + 1
            self.calls.append((name, len(items)))
            return [f"done {item[0]}" for item in items]
        self.calls.append((name, 1))
        return f"done {args[0]}"


async def test_calls_made_meanwhile_go_in_bounded_batches_with_their_own_answers() -> None:
    rec = Recorder()
    batch = Batch(rec, "finish")  # type: ignore[arg-type]
    n = 3 * MAX_ITEMS + 4
    answers = await asyncio.gather(*(batch.submit([f"e{i}"]) for i in range(n)))
    assert answers == [f"done e{i}" for i in range(n)]
    assert rec.calls[0] == ("finish", 1)  # the first went alone, at once
    sizes = [k for name, k in rec.calls[1:]]
    assert all(name == "finish_many" for name, _ in rec.calls[1:])
    assert max(sizes) == MAX_ITEMS and sum(sizes) == n - 1
    assert await batch.submit(["alone"]) == "done alone"  # idle again: a lone call
    assert rec.calls[-1] == ("finish", 1)


async def test_a_failed_batch_call_fails_each_of_its_callers() -> None:
    rec = Recorder()
    batch = Batch(rec, "finish")  # type: ignore[arg-type]
    first = asyncio.ensure_future(batch.submit(["e0"]))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batch.submit([f"e{i}"])) for i in range(1, 5)]
    rec.fail = True
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results), results
    rec.fail = False
    assert await batch.submit(["after"]) == "done after"
