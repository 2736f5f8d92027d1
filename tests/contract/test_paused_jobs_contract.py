"""Paused jobs (``Storage.pause_job``): claims pass over them, on every backend."""

from __future__ import annotations

from pathlib import Path

from test_storage_contract import LEASE, claimed, rec, status

from qanat.storage import SqliteStorage, Storage
from qanat.storage.base import Finish, now


async def test_pause_job_reports_changes_and_lists_paused(storage: Storage) -> None:
    assert await storage.paused_jobs() == set()
    assert await storage.pause_job("a", True) is True
    assert await storage.pause_job("a", True) is False
    assert await storage.pause_job("b", True) is True
    assert await storage.paused_jobs() == {"a", "b"}
    assert await storage.pause_job("a", False) is True
    assert await storage.pause_job("a", False) is False
    assert await storage.pause_job("never", False) is False
    assert await storage.paused_jobs() == {"b"}


async def test_claim_passes_over_a_paused_job_until_it_is_resumed(storage: Storage) -> None:
    await storage.pause_job("slow", True)
    # enqueueing still works: they wait as pending
    await storage.enqueue([rec("s1", job="slow", priority=5), rec("f1", job="fast")])
    got = await storage.claim("w", ["slow", "fast"], 10, LEASE, now())
    assert [r.id for r in got] == ["f1"]
    assert await storage.claim("w", ["slow"], 10, LEASE, now()) == []
    assert await status(storage, "s1") == "pending"
    await storage.pause_job("slow", False)
    assert [r.id for r in await storage.claim("w", ["slow", "fast"], 10, LEASE, now())] == ["s1"]


async def test_has_ready_passes_over_a_paused_job(storage: Storage) -> None:
    await storage.enqueue([rec("s1", job="slow")])
    assert await storage.has_ready(["slow"], now()) is True
    await storage.pause_job("slow", True)
    if type(storage).has_ready is not Storage.has_ready:  # a backend that answers exactly
        assert await storage.has_ready(["slow"], now()) is False
    await storage.pause_job("slow", False)
    assert await storage.has_ready(["slow"], now()) is True


async def test_running_executions_of_a_paused_job_carry_on(storage: Storage) -> None:
    await claimed(storage, rec("r1", job="slow"), rec("r2", job="slow"))
    await storage.pause_job("slow", True)
    assert await storage.renew("w1", ["r1", "r2"], LEASE) == {}
    assert await storage.finish("r1", "w1", Finish("completed", output="1"))
    assert await status(storage, "r1") == "completed"
    # an abandoned one (lease lapsed) is not taken up again while its job is paused
    await storage.expire_owner("w1", now())
    assert await storage.claim("w2", ["slow"], 10, LEASE, now()) == []
    await storage.pause_job("slow", False)
    assert [r.id for r in await storage.claim("w2", ["slow"], 10, LEASE, now())] == ["r2"]


async def test_paused_jobs_survive_reopening_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "paused.db")
    async with SqliteStorage(path) as first:
        await first.pause_job("slow", True)
        await first.enqueue([rec("s1", job="slow")])
    async with SqliteStorage(path) as second:
        assert await second.paused_jobs() == {"slow"}
        assert await second.claim("w", ["slow"], 10, LEASE, now()) == []
