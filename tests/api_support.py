"""What the HTTP API tests share: a real ``Queue`` on a SQLite file (or a schema of the
session's PostgreSQL server), its ``api_app`` reached in-process through httpx's ASGI
transport, and a snapshot of everything stored, to show that a refused request changed
nothing.

The queue the API serves is a client (``worker=False``), so nothing but the requests
writes to storage between two snapshots. Executions that must have run first (completed,
failed, with steps and logs) are run by a worker queue on the same storage that is
stopped before the client opens (``run_first``).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import BaseModel, Field

import qanat
from qanat import Job, NonRetryable, Pipe, Queue, job
from qanat.storage import PostgresStorage, SqliteStorage


class Order(BaseModel):
    order_id: int
    qty: int = Field(gt=0)


class Upload(BaseModel):
    path: str
    user_id: int


uploads = Pipe("uploads", input=Upload)
approvals = Pipe("approvals")


@job
async def add(a: int, b: int = 1) -> int:
    return a + b


@job(input=Order)
async def place(order: Order) -> int:
    return order.qty


@job
async def ship(order: Order, note: str = "") -> int:
    return order.order_id


def _broken_priority(value: Any) -> int:
    return 1 // 0  # the app's own bug, met while enqueueing


@job(priority=_broken_priority)
async def sloppy() -> None:
    return None


@job(retry=1)
async def boom(why: str = "no") -> None:
    raise NonRetryable(f"boom: {why}")


@job
async def chatty(n: int) -> int:
    total = await qanat.run("double", lambda: n * 2)
    qanat.log("doubled", n=n, total=total)
    qanat.progress(50, "half way", {"n": n})
    return total


@job(triggers=[uploads.into(lambda e: {"path": e.path})])
async def on_upload(path: str) -> str:
    return path


@job
async def approve(order_id: int) -> Any:
    return await approvals.wait_for({"order_id": order_id}, timeout="1m")


JOBS: list[Job[Any]] = [add, place, ship, sloppy, boom, chatty, on_upload, approve]
PIPES: list[Pipe[Any]] = [uploads, approvals]

_schemas = itertools.count()


@dataclass
class Api:
    """A started client queue, an httpx client on its API, and its storage's snapshot."""

    queue: Queue
    client: httpx.AsyncClient
    snapshot: Callable[[], dict[str, list[str]]]

    async def refused(
        self, method: str, url: str, status: int, *needles: str, **kw: Any
    ) -> dict[str, Any]:
        """Send a request that must be refused with ``status`` and an error naming every
        one of ``needles``; check that nothing stored changed. The error body."""
        before = self.snapshot()
        r = await self.client.request(method, url, **kw)
        assert r.status_code == status, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = r.json()
        assert set(body) == {"error"}, body
        for needle in needles:
            assert needle in body["error"], (needle, body["error"])
        assert self.snapshot() == before, f"{method} {url} changed storage"
        return body


def _sqlite_rows(path: str) -> dict[str, list[str]]:
    con = sqlite3.connect(path)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in names}
    finally:
        con.close()


def _postgres_rows(url: str, schema: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as con:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        ]
        return {
            t: sorted(map(repr, con.execute(f'SELECT * FROM "{schema}"."{t}"')))  # type: ignore[call-overload]
            for t in names
        }


def snapshot_of(storage: Any) -> Callable[[], dict[str, list[str]]]:
    """Every row of every table of ``storage``, read over a connection of its own."""
    if isinstance(storage, SqliteStorage):
        return lambda: _sqlite_rows(storage.path)
    assert isinstance(storage, PostgresStorage)
    return lambda: _postgres_rows(storage.url, storage.schema)


def storage_factory(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A maker of fresh storage objects over one SQLite file or one PostgreSQL schema."""
    if kind == "sqlite":
        path = str(tmp_path / f"api_{next(_schemas)}.db")
        return lambda: SqliteStorage(path)
    url: str = request.getfixturevalue("postgres_url")
    schema = f"api_{next(_schemas)}"
    return lambda: PostgresStorage(url, schema=schema)


MakeApi = Callable[..., Awaitable[Api]]

#: The content type of a raw body sent as JSON.
JSON = {"content-type": "application/json"}
