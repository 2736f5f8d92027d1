"""Inline commits of the SQLite writer (``sqlcore/writer.py``): a write submitted while
the writer and the event loop are idle commits on the caller's thread; anything else
goes to the writer thread. Real SQLite files, a second real connection for the lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from qanat.storage.sqlcore.writer import INLINE_READY
from qanat.storage.sqlite import SqliteStorage

Seen = list[tuple[str, int]]


def _insert(conn: Any, seen: Seen, what: str) -> str:
    conn.execute("INSERT INTO t VALUES (?)", (what,))
    seen.append((what, threading.get_ident()))
    return what


def _boom(conn: Any) -> None:
    conn.execute("INSERT INTO t VALUES ('never')")
    raise ValueError("boom")


async def _open(tmp_path: Path) -> SqliteStorage:
    s = SqliteStorage(tmp_path / "q.db")
    await s.open()
    assert s._writer is not None
    await s._writer.submit(lambda c: c.execute("CREATE TABLE t (v TEXT)"), ())
    return s


def _rows(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        conn.close()


async def test_a_lone_write_on_an_idle_loop_commits_on_the_callers_thread(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    seen: Seen = []
    try:
        assert s._writer is not None
        fut = s._writer.submit(_insert, (seen, "a"))
        assert fut.done()  # committed before submit returned: no hop
        assert await fut == "a"
        # durable and visible to another connection at once (acknowledged after COMMIT)
        assert _rows(tmp_path / "q.db") == ["a"]
        with_error = s._writer.submit(_boom, ())
        assert with_error.done() and isinstance(with_error.exception(), ValueError)
    finally:
        await s.close()
    assert seen == [("a", threading.get_ident())]
    assert _rows(tmp_path / "q.db") == ["a"]  # the failed operation left nothing


async def test_one_other_ready_callback_still_commits_inline_more_queue(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    seen: Seen = []
    loop = asyncio.get_running_loop()
    try:
        assert s._writer is not None and INLINE_READY == 1
        loop.call_soon(lambda: None)  # e.g. the wake-up of a result's caller
        assert s._writer.submit(_insert, (seen, "beside one")).done()
        await asyncio.sleep(0)
        loop.call_soon(lambda: None)
        loop.call_soon(lambda: None)  # two others ready: someone may join a group commit
        queued = s._writer.submit(_insert, (seen, "beside two"))
        assert not queued.done()
        assert await queued == "beside two"
    finally:
        await s.close()
    me = threading.get_ident()
    assert seen[0] == ("beside one", me) and seen[1][0] == "beside two" and seen[1][1] != me


async def test_concurrent_writes_still_share_the_writer_threads_group_commit(
    tmp_path: Path,
) -> None:
    s = await _open(tmp_path)
    seen: Seen = []

    async def one(i: int) -> str:
        assert s._writer is not None
        return await s._writer.submit(_insert, (seen, str(i)))

    try:
        got = await asyncio.gather(*(one(i) for i in range(20)))
    finally:
        await s.close()
    assert got == [str(i) for i in range(20)]
    loop_thread = threading.get_ident()
    on_thread = [w for w, ident in seen if ident != loop_thread]
    # the first caller finds the loop with 19 more ready to run: all go to the thread
    assert len(on_thread) == 20


async def test_another_processes_write_lock_sends_it_to_the_thread_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    s = await _open(tmp_path)
    seen: Seen = []
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock, as another process would
    try:
        assert s._writer is not None
        start = time.perf_counter()
        fut = s._writer.submit(_insert, (seen, "late"))
        assert time.perf_counter() - start < 0.1  # the loop did not wait for the lock
        assert not fut.done()
        await asyncio.sleep(0.2)  # the loop keeps running meanwhile; the write waits
        assert not fut.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(fut, 10) == "late"
        # and once the thread has finished, the next lone write is inline again
        nxt = s._writer.submit(_insert, (seen, "next"))
        assert nxt.done()
    finally:
        other.close()
        await s.close()
    loop_thread = threading.get_ident()
    assert [(w, ident == loop_thread) for w, ident in seen] == [("late", False), ("next", True)]


async def test_a_write_never_overtakes_one_queued_before_it(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    seen: Seen = []
    entered, gate = threading.Event(), threading.Event()

    def slow(conn: Any) -> None:
        entered.set()
        gate.wait(10)
        _insert(conn, seen, "first")

    try:
        assert s._writer is not None
        for _ in range(INLINE_READY + 1):  # the loop is not idle: queue it
            asyncio.get_running_loop().call_soon(lambda: None)
        first = s._writer.submit(slow, ())  # not awaited
        assert await asyncio.to_thread(entered.wait, 10)  # in the writer thread's hands
        second = s._writer.submit(_insert, (seen, "second"))
        assert not second.done()  # it queued behind the first instead of committing now
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        await s.close()
    assert [w for w, _ in seen] == ["first", "second"]
    assert _rows(tmp_path / "q.db") == ["first", "second"]


class _Bell:
    def __init__(self) -> None:
        self.rings: list[bool] = []

    def ring(self, local: bool = True) -> None:
        self.rings.append(local)


async def test_a_commit_of_quiet_operations_only_does_not_wake_this_process(
    tmp_path: Path,
) -> None:
    from qanat.storage.sqlcore.writer import ConnThread
    from qanat.storage.sqlite import SqliteConnection

    conn = sqlite3.connect(
        tmp_path / "t.db", isolation_level=None, check_same_thread=False, factory=SqliteConnection
    )
    conn.execute("CREATE TABLE t (v TEXT)")
    seen: Seen = []

    def quiet_insert(conn: Any, seen: Seen, what: str) -> str:
        return _insert(conn, seen, what)

    t = ConnThread(
        conn, "w", "test", True, (sqlite3.Error,), quiet={quiet_insert: lambda seen, w: w != "loud"}
    )
    t.bell = bell = _Bell()
    try:
        await t.submit(quiet_insert, (seen, "step"))  # quiet: other processes only
        await t.submit(quiet_insert, (seen, "loud"))  # the predicate says no
        await t.submit(_insert, (seen, "enqueue"))  # not a quiet operation
        await asyncio.gather(  # a batch is quiet only if all of it is
            t.submit(quiet_insert, (seen, "a")), t.submit(_insert, (seen, "b"))
        )
    finally:
        await t.stop()
    assert bell.rings == [False, True, True, True]
    assert len(seen) == 5


async def test_a_small_read_on_an_idle_reader_runs_on_the_callers_thread(tmp_path: Path) -> None:
    from qanat.storage.base import ExecutionRecord
    from qanat.storage.sqlcore import backend, queries

    s = SqliteStorage(tmp_path / "r.db")
    await s.open()
    threads: list[int] = []

    def counted(conn: Any, execution_id: str) -> Any:
        threads.append(threading.get_ident())
        return queries.op_get(conn, execution_id)

    def failing_inline(conn: Any, execution_id: str) -> str:
        threads.append(threading.get_ident())
        if threading.get_ident() == loop_thread:
            raise sqlite3.OperationalError("database is locked")
        return "from the thread"

    loop_thread = threading.get_ident()
    try:
        await s.enqueue([ExecutionRecord(id="e1", job="j", input="{}")])
        reader = s._reader
        assert reader is not None and reader.inline_reads is not None
        reader.inline_reads = {**backend.INLINE_READS, counted: lambda i: True,
                               failing_inline: lambda i: True}  # fmt: skip
        fut = reader.submit(counted, ("e1",))
        assert fut.done() and (await fut).id == "e1"  # no hop: read before submit returned
        # a busy reader (a slow query in its thread): the read is queued behind it
        entered, gate = threading.Event(), threading.Event()
        slow = reader.submit(lambda conn: (entered.set(), gate.wait(10)), ())
        assert await asyncio.to_thread(entered.wait, 10)
        queued = reader.submit(counted, ("e1",))
        assert not queued.done()
        gate.set()
        await slow
        assert (await queued).id == "e1"
        # a read that fails inline is run again by the thread, which reports its result
        assert await reader.submit(failing_inline, ("e1",)) == "from the thread"
        # what a store read inline returns is what the thread would (a get_many of a few)
        assert [r.id for r in await s.get_many(["e1", "nope"])] == ["e1"]
    finally:
        await s.close()
    assert [t == loop_thread for t in threads] == [True, False, True, False]


async def test_storing_executions_this_processs_worker_adopted_does_not_wake_it(
    tmp_path: Path,
) -> None:
    from qanat.storage.base import RUNNING, Checkpoint, ExecutionRecord, StepRecord, now

    s = SqliteStorage(tmp_path / "q.db")
    await s.open()
    assert s._writer is not None
    s._writer.bell = bell = _Bell()

    def rec(ident: str, owner: str | None = None) -> ExecutionRecord:
        at = now()
        r = ExecutionRecord(id=ident, job="j", input="{}", created_at=at, run_at=at)
        r.available_at = at + 30 if owner else at
        if owner is not None:
            r.status, r.owner = RUNNING, owner
        return r

    def kid(parent: str, key: str, owner: str | None) -> Checkpoint:
        at = now()
        step = StepRecord(parent, key, "start", "j", "completed", '"k"', None, 1, 1, at, at)
        return Checkpoint(step, [rec(key, owner)])

    try:
        await s.enqueue([rec("adopted", owner="w1")])  # stored claimed: runs here already
        await s.enqueue([rec("pending")])  # claimable: this process's worker must look
        assert await s.checkpoint("adopted", "w1", kid("adopted", "k1", "w1")) is None
        assert await s.checkpoint("adopted", "w1", kid("adopted", "k2", None)) is None
    finally:
        await s.close()
    assert bell.rings == [False, True, False, True]


async def test_a_final_finish_wakes_this_process_only_when_it_wakes_someone_here(
    tmp_path: Path,
) -> None:
    from qanat.storage.base import (
        COMPLETED,
        PENDING,
        RUNNING,
        ExecutionRecord,
        Finish,
        Waiter,
        now,
    )
    from qanat.storage.records import CompletionEvent

    s = SqliteStorage(tmp_path / "q.db")
    await s.open()
    assert s._writer is not None
    s._writer.bell = bell = _Bell()

    async def running(ident: str, parent: str | None = None) -> None:
        at = now()
        r = ExecutionRecord(id=ident, job="j", input="{}", created_at=at, run_at=at)
        r.status, r.owner, r.available_at, r.parent_id = RUNNING, "w1", at + 30, parent
        await s.enqueue([r])

    def done(ident: str) -> Finish:
        event = CompletionEvent(ident + "-ev", "job:j", "{}", "1", now(), ident)
        return Finish(COMPLETED, output="1", event=event)

    try:
        for ident in ("plain", "parent", "child", "retried", "awaited"):
            await running(ident, parent="parent" if ident == "child" else None)
        del bell.rings[:]
        assert await s.finish("plain", "w1", done("plain"))  # nobody else to wake: quiet
        assert await s.finish("child", "w1", done("child"))  # wakes its parent
        assert await s.finish("retried", "w1", Finish(PENDING, error="x", available_at=now()))
        assert bell.rings == [False, True, True]  # a retry makes it claimable again
        # the parent waits for any completion of job "j" (``j.wait_for``)
        await s.wait("parent", "w1", Waiter("parent", "w", "job:j", None, None, now()), None)
        del bell.rings[:]
        assert await s.finish("awaited", "w1", done("awaited"))  # serves that waiter
        assert bell.rings == [True]
        # a node's listeners answer other processes' long polls: every finish wakes them
        s.serves_others = True
        await running("for-others")
        del bell.rings[:]
        assert await s.finish("for-others", "w1", done("for-others"))
        assert bell.rings == [True]
    finally:
        await s.close()
