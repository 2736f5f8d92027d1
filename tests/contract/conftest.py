"""Fixtures of the storage contract suite: every test runs once per backend.

A new backend is one more entry in ``BACKENDS`` (a factory taking pytest's ``tmp_path``
and the test's request, for session services such as ``postgres_url``); the tests
themselves never change.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from qanat.storage import MemoryStorage, PostgresStorage, RedisStorage, SqliteStorage, Storage
from services import postgres_server, postgres_url, redis_server, redis_url

# the session's PostgreSQL and Redis servers (tests/services.py)
__all__ = ["postgres_server", "postgres_url", "redis_server", "redis_url"]

_schemas = itertools.count()


def _postgres(request: pytest.FixtureRequest) -> Storage:
    """A fresh schema of the session's server for each test."""
    url: str = request.getfixturevalue("postgres_url")
    return PostgresStorage(url, schema=f"contract_{next(_schemas)}")


def _redis(request: pytest.FixtureRequest) -> Storage:
    """A fresh prefix of the session's server for each test."""
    url: str = request.getfixturevalue("redis_url")
    return RedisStorage(url, prefix=f"contract_{next(_schemas)}")


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Storage]] = {
    "memory": lambda tmp, request: MemoryStorage(),
    "sqlite": lambda tmp, request: SqliteStorage(str(tmp / "contract.db")),
    "postgres": lambda tmp, request: _postgres(request),
    "redis": lambda tmp, request: _redis(request),
}


@pytest_asyncio.fixture(params=sorted(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = BACKENDS[request.param](tmp_path, request)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def twin_of(store: Storage) -> Storage:
    """A second storage object on the same store (another worker process's view)."""
    if isinstance(store, SqliteStorage):
        return SqliteStorage(store.path)
    if isinstance(store, PostgresStorage):
        return PostgresStorage(store.url, schema=store.schema)
    if isinstance(store, RedisStorage):
        return RedisStorage(store.url, prefix=store.prefix)
    return store  # memory: one process, one object


@pytest_asyncio.fixture
async def twin(storage: Storage) -> AsyncIterator[Storage]:
    """The test's ``storage`` opened a second time (the same object for memory)."""
    other = twin_of(storage)
    if other is storage:
        yield storage
        return
    await other.open()
    try:
        yield other
    finally:
        await other.close()
