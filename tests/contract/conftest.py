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

from node_server import NodeServer
from qanat.storage import MemoryStorage, PostgresStorage, RedisStorage, SqliteStorage, Storage
from qanat.storage.http import HttpStorage
from services import postgres_server, postgres_url, redis_server, redis_url

# the session's PostgreSQL and Redis servers (tests/services.py)
__all__ = ["postgres_server", "postgres_url", "redis_server", "redis_url"]

_schemas = itertools.count()


def _postgres(request: pytest.FixtureRequest) -> Storage:
    """A fresh schema of the session's server for each test."""
    url: str = request.getfixturevalue("postgres_url")
    return PostgresStorage(url, schema=f"contract_{next(_schemas)}")


class NodeClient(HttpStorage):
    """An ``HttpStorage`` talking to an in-process node (ASGI transport) over SQLite;
    closing it stops the node too."""

    def __init__(self, path: Path) -> None:
        from qanat.queue import Queue
        from qanat.server.app import build_app

        self.app = build_app(Queue(storage=SqliteStorage(str(path))), token="contract-token")
        super().__init__("http://node", token="contract-token", transport=self.app)

    async def close(self) -> None:
        await super().close()
        await self.app.state.node.stop()


NODE_APP = "import os, qanat\nqueue = qanat.Queue(storage=os.environ['QANAT_TEST_STORAGE'])\n"


class ServedNode(HttpStorage):
    """An ``HttpStorage`` talking to a real ``qanat serve`` subprocess over SQLite, on
    127.0.0.1 with a token; closing it stops the node."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "nodeapp.py").write_text(NODE_APP)
        self.server = NodeServer(tmp, tmp / "contract.db", app="nodeapp:queue")
        self.server.start()
        super().__init__(self.server.url, token=self.server.token)

    async def close(self) -> None:
        await super().close()
        self.server.stop()


def _redis(request: pytest.FixtureRequest) -> Storage:
    """A fresh prefix of the session's server for each test."""
    url: str = request.getfixturevalue("redis_url")
    return RedisStorage(url, prefix=f"contract_{next(_schemas)}")


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Storage]] = {
    "memory": lambda tmp, request: MemoryStorage(),
    "sqlite": lambda tmp, request: SqliteStorage(str(tmp / "contract.db")),
    "postgres": lambda tmp, request: _postgres(request),
    "http": lambda tmp, request: NodeClient(tmp / "contract.db"),
    "serve": lambda tmp, request: ServedNode(tmp),
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
    if isinstance(store, NodeClient):  # another worker of the same node
        return HttpStorage(store.url, token=store.token, transport=store.app)
    if isinstance(store, ServedNode):
        return HttpStorage(store.url, token=store.token)
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
