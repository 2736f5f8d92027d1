"""The SQL backends' connection thread (``sqlcore/writer.py``) with a recording fake
connection: which statements a batch sends around its operations."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from qanat.errors import StorageError
from qanat.storage.sqlcore.dialect import POSTGRES
from qanat.storage.sqlcore.writer import ConnThread


class Recording:
    """A connection that records every statement and changes a row for each write."""

    dialect = POSTGRES
    broken = False

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.total_changes = 0
        self.open = False

    def execute(self, sql: str, parameters: Any = None, /) -> None:
        self.sent.append(sql)
        if sql == "BEGIN":
            self.open = True
        elif sql in ("COMMIT", "ROLLBACK"):
            self.open = False
        elif not sql.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            self.total_changes += 1

    def executemany(self, sql: str, parameters: Any, /) -> None:
        self.execute(sql)

    @property
    def in_transaction(self) -> bool:
        return self.open

    def close(self) -> None:
        pass


def write(conn: Recording, what: str) -> str:
    conn.execute(f"INSERT {what}")
    return what


def fail(conn: Recording, what: str) -> str:
    conn.execute(f"INSERT {what}")
    raise ValueError(f"bad {what}")


class Bell:
    def __init__(self) -> None:
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1


def thread(conn: Recording) -> ConnThread:
    single = {write: lambda what: what != "two", fail: lambda what: True}
    return ConnThread(conn, "test-writer", "test", True, (ValueError,), single=single)


async def test_a_lone_one_statement_op_runs_without_begin_and_commit() -> None:
    conn = Recording()
    t = thread(conn)
    t.bell = bell = Bell()
    try:
        assert await asyncio.wait_for(t.submit(write, ("one",)), 10) == "one"
    finally:
        await asyncio.wait_for(t.stop(), 10)
    assert conn.sent == ["INSERT one"]
    assert bell.rings == 1  # the statement committed itself: others are told


async def test_an_op_that_is_not_one_statement_for_its_arguments_gets_a_transaction() -> None:
    conn = Recording()
    t = thread(conn)
    try:
        assert await asyncio.wait_for(t.submit(write, ("two",)), 10) == "two"
    finally:
        await asyncio.wait_for(t.stop(), 10)
    assert conn.sent == ["BEGIN", "INSERT two", "COMMIT"]


async def test_one_statement_ops_queued_together_share_one_transaction() -> None:
    conn = Recording()
    t = thread(conn)
    running, release = threading.Event(), threading.Event()

    def hold(c: Recording) -> None:  # keeps the thread busy while a and b are queued
        running.set()
        release.wait(10)

    held = t.submit(hold, ())
    try:
        assert await asyncio.to_thread(running.wait, 10)
        futs = [t.submit(write, (w,)) for w in ("a", "b")]
        release.set()
        await asyncio.wait_for(held, 10)
        assert await asyncio.wait_for(asyncio.gather(*futs), 10) == ["a", "b"]
    finally:
        release.set()
        await asyncio.wait_for(t.stop(), 10)
    after_hold = conn.sent[2:]  # the hold's own BEGIN and COMMIT come first
    assert conn.sent[:2] == ["BEGIN", "COMMIT"]
    assert after_hold[0] == "BEGIN" and after_hold[-1] == "COMMIT"
    assert [s for s in after_hold if s.startswith("INSERT")] == ["INSERT a", "INSERT b"]


async def test_a_lone_one_statement_op_that_fails_reports_its_error() -> None:
    conn = Recording()
    t = thread(conn)
    try:
        with pytest.raises(StorageError, match="bad x"):
            await asyncio.wait_for(t.submit(fail, ("x",)), 10)
    finally:
        await asyncio.wait_for(t.stop(), 10)
    assert conn.sent == ["INSERT x"]
