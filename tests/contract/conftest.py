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

from qanat.storage import MemoryStorage, PostgresStorage, SqliteStorage, Storage
from services import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]  # the session's PostgreSQL server (tests/services.py)

_schemas = itertools.count()


def _postgres(request: pytest.FixtureRequest) -> Storage:
    """A fresh schema of the session's server for each test."""
    url: str = request.getfixturevalue("postgres_url")
    return PostgresStorage(url, schema=f"contract_{next(_schemas)}")


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Storage]] = {
    "memory": lambda tmp, request: MemoryStorage(),
    "sqlite": lambda tmp, request: SqliteStorage(str(tmp / "contract.db")),
    "postgres": lambda tmp, request: _postgres(request),
}


@pytest_asyncio.fixture(params=sorted(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = BACKENDS[request.param](tmp_path, request)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
