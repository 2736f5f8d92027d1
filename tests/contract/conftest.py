"""Fixtures of the storage contract suite: every test runs once per backend.

A new backend is one more entry in ``BACKENDS`` (a factory taking pytest's ``tmp_path``);
the tests themselves never change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from qanat.storage import MemoryStorage, SqliteStorage, Storage

BACKENDS: dict[str, Callable[[Path], Storage]] = {
    "memory": lambda tmp: MemoryStorage(),
    "sqlite": lambda tmp: SqliteStorage(str(tmp / "contract.db")),
}


@pytest_asyncio.fixture(params=sorted(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = BACKENDS[request.param](tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
