"""The SQLite doorbell: a commit wakes the tickers of other storages on the same file.

Every test that must prove the bell (not the poll) did the waking sets the fallback
poll to an hour.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from qanat import Queue, job
from qanat.engine import watcher
from qanat.engine.watcher import Ticker
from qanat.storage import MemoryStorage, SqliteStorage
from qanat.storage import doorbell as doorbell_mod
from qanat.storage.base import ExecutionRecord, now
from qanat.storage.doorbell import bell_dirs

HOUR = 3600.0


def rec(ident: str) -> ExecutionRecord:
    t = now()
    return ExecutionRecord(id=ident, job="j", input="{}", created_at=t, run_at=t, available_at=t)


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fallback folders go to a temp dir of this test (short: socket paths are
    limited to ~100 bytes), removed afterwards, so nothing is left behind. After
    tmp_path, which is made in the real temp dir."""
    tmp = tempfile.mkdtemp(prefix="qb-")
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    yield Path(tmp)
    shutil.rmtree(tmp)


@pytest.fixture
def no_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher, "BELL_POLL", HOUR)
    monkeypatch.setattr(watcher, "FAST_POLL", HOUR)
    monkeypatch.setattr(watcher, "IDLE_POLL", HOUR)


@pytest_asyncio.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Any]:
    stores: list[SqliteStorage] = []
    tickers: list[Ticker] = []

    async def open_(path: Path | None = None) -> tuple[SqliteStorage, Ticker]:
        store = SqliteStorage(str(path or tmp_path / "bell.db"))
        await store.open()
        stores.append(store)
        ticker = Ticker(store.changed, store.listen)
        ticker.start()
        tickers.append(ticker)
        await asyncio.sleep(0.01)  # let the ticker bind its socket
        return store, ticker

    yield open_
    for t in tickers:
        await t.stop()
    for s in stores:
        await s.close()


def exists(path: str) -> bool:
    return os.path.exists(path)


def sockets(folder: str | Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".sock"))
    except FileNotFoundError:
        return []


async def woken(ticker: Ticker, action: Any, within: float = 2.0) -> float:
    """Seconds from the start of ``action`` until ``ticker`` fires."""
    ev = ticker.event()
    t0 = time.perf_counter()
    await action
    await asyncio.wait_for(ev.wait(), within)
    return time.perf_counter() - t0


async def test_a_commit_wakes_another_storage_on_the_file(opened: Any, no_poll: None) -> None:
    a, _ = await opened()
    b, tb = await opened()
    beside = bell_dirs(b.path)[0]
    assert len(sockets(beside)) == 2
    for i in range(5):
        assert await woken(tb, a.enqueue([rec(f"e{i}")])) < 0.5


async def test_a_transaction_that_changed_nothing_does_not_ring(opened: Any, no_poll: None) -> None:
    a, _ = await opened()
    _, tb = await opened()
    ev = tb.event()
    assert await a.claim("w", ["j"], 10, 30.0, now()) == []  # nothing to claim: no change
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ev.wait(), 0.2)
    assert await woken(tb, a.enqueue([rec("e1")])) < 0.5


async def test_own_commits_wake_the_own_ticker_directly(opened: Any, no_poll: None) -> None:
    a, ta = await opened()
    assert await woken(ta, a.enqueue([rec("e1")])) < 0.5


async def test_a_commit_in_another_process_wakes_this_one(
    opened: Any, no_poll: None, tmp_path: Path
) -> None:
    _, tb = await opened()
    script = (
        "import asyncio, sys\n"
        "from qanat.storage import SqliteStorage\n"
        "from qanat.storage.base import ExecutionRecord, now\n"
        "async def main():\n"
        "    s = SqliteStorage(sys.argv[1])\n"
        "    await s.open()\n"
        "    t = now()\n"
        "    await s.enqueue([ExecutionRecord('x1', 'j', '{}', created_at=t, run_at=t,"
        " available_at=t)])\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    ev = tb.event()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(tmp_path / "bell.db"), env=dict(os.environ)
    )
    try:
        await asyncio.wait_for(ev.wait(), 20)
    finally:
        assert await proc.wait() == 0


async def test_sockets_are_removed_on_close(opened: Any, tmp_path: Path) -> None:
    a, ta = await opened()
    beside = bell_dirs(a.path)[0]
    assert len(sockets(beside)) == 1
    await ta.stop()
    assert sockets(beside) == []
    assert not exists(beside)  # the empty folder goes too
    await a.close()


async def test_the_socket_of_a_dead_process_is_removed(opened: Any, tmp_path: Path) -> None:
    db = tmp_path / "bell.db"
    beside = bell_dirs(str(db))[0]
    os.makedirs(beside)
    dead = os.path.join(beside, "deadbeefdeadbeef.sock")
    young = os.path.join(beside, "0123456789abcdef.sock")
    for path in (dead, young):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.close()  # the file stays, as after a crash
    old = time.time() - 60
    os.utime(dead, (old, old))
    a, _ = await opened(db)
    await a.enqueue([rec("e1")])
    assert not exists(dead)
    assert exists(young)  # maybe being bound right now: kept until it is older
    os.unlink(young)


async def test_a_full_socket_does_not_block_a_commit(opened: Any, tmp_path: Path) -> None:
    db = tmp_path / "bell.db"
    beside = bell_dirs(str(db))[0]
    os.makedirs(beside)
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read
    deaf.bind(os.path.join(beside, "feedfeedfeedfeed.sock"))
    try:
        a, _ = await opened(db)
        t0 = time.perf_counter()
        for i in range(300):  # far more rings than a socket buffer holds
            await a.enqueue([rec(f"e{i}")])
        assert time.perf_counter() - t0 < 30
        assert len(await a.get_many([f"e{i}" for i in range(300)])) == 300
    finally:
        deaf.close()
        os.unlink(os.path.join(beside, "feedfeedfeedfeed.sock"))


async def test_an_unusable_folder_beside_the_db_falls_back_to_the_temp_dir(
    opened: Any, no_poll: None, tmp_path: Path, private_tempdir: Path
) -> None:
    db = tmp_path / "bell.db"
    beside, fallback = bell_dirs(str(db))
    assert fallback.startswith(str(private_tempdir))
    os.close(os.open(beside, os.O_CREAT | os.O_WRONLY))  # a file in the way: unusable
    a, _ = await opened(db)
    _, tb = await opened(db)
    assert len(sockets(fallback)) == 2
    assert await woken(tb, a.enqueue([rec("e1")])) < 0.5


async def test_a_listener_in_either_folder_is_rung(
    opened: Any, no_poll: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "bell.db"
    beside, fallback = bell_dirs(str(db))
    real_makedirs = os.makedirs
    refusing = True

    def refuse_beside(name: Any, *args: Any, **kw: Any) -> None:
        if refusing and os.fspath(name) == beside:
            raise PermissionError(13, "Permission denied", name)
        real_makedirs(name, *args, **kw)

    monkeypatch.setattr(doorbell_mod.os, "makedirs", refuse_beside)
    _, tb = await opened(db)  # could not use the folder beside the db: in the temp dir
    refusing = False
    a, _ = await opened(db)  # this one could
    assert len(sockets(fallback)) == 1 and len(sockets(beside)) == 1
    assert await woken(tb, a.enqueue([rec("e1")])) < 0.5


async def test_a_path_too_long_for_a_socket_falls_back_to_the_temp_dir(
    opened: Any, no_poll: None, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    db = deep / "bell.db"
    beside, fallback = bell_dirs(str(db))
    a, _ = await opened(db)
    _, tb = await opened(db)
    assert not exists(beside)
    assert len(sockets(fallback)) == 2
    assert await woken(tb, a.enqueue([rec("e1")])) < 0.5


async def test_no_usable_folder_at_all_still_works_by_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(name: Any, *args: Any, **kw: Any) -> None:
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(doorbell_mod.os, "makedirs", refuse)
    db = str(tmp_path / "bell.db")
    a, b = SqliteStorage(db), SqliteStorage(db)
    await a.open()
    await b.open()
    try:
        assert b.listen(lambda: None) is None
        tb = Ticker(b.changed, b.listen)
        tb.start()
        try:
            await asyncio.sleep(0.01)
            assert await woken(tb, a.enqueue([rec("e1")])) < 1.0  # the 1 ms poll
        finally:
            await tb.stop()
    finally:
        await a.close()
        await b.close()


async def test_memory_storages_have_no_bell() -> None:
    store = MemoryStorage()
    await store.open()
    assert store.listen(lambda: None) is None
    await store.close()
    assert SqliteStorage("x.db").listen(lambda: None) is None  # not open


@job
async def noop() -> int:
    return 1


async def test_queues_in_two_places_wake_each_other_through_the_bell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's start reaches another queue's worker, and its finish the client's
    result(), without polling (the claim loop's own fallback is 250 ms)."""
    monkeypatch.setattr(watcher, "BELL_POLL", HOUR)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    worker = Queue(jobs=[noop], storage=url)
    client = Queue(jobs=[noop], storage=url)
    await worker.start()
    await client.start(worker=False)
    try:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            h = await client.jobs.noop.start()
            assert await h.result(timeout=10) == 1
            times.append(time.perf_counter() - t0)
        assert sorted(times)[2] < 0.2, times
    finally:
        await client.stop()
        await worker.stop()
    assert sockets(bell_dirs(str(tmp_path / "q.db"))[0]) == []
