"""Fixtures of the HTTP API tests (the helpers they use are in ``api_support``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from api_support import JOBS, PIPES, Api, MakeApi, snapshot_of, storage_factory
from qanat import Queue
from qanat.server.api import api_app
from services import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]


@pytest_asyncio.fixture
async def make_api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[MakeApi]:
    """``await make_api(kind="sqlite", token=None, run_first=None, worker=False, **options)``.

    ``run_first(queue)``, when given, runs with a worker on the same storage before the
    API's client queue opens: the executions it leaves behind are finished ones.
    """
    opened: list[tuple[Queue, httpx.AsyncClient]] = []

    async def make(
        kind: str = "sqlite",
        token: str | None = None,
        run_first: Callable[[Queue], Awaitable[Any]] | None = None,
        worker: bool = False,
        **options: Any,
    ) -> Api:
        storage = storage_factory(kind, tmp_path, request)
        if run_first is not None:
            async with Queue(jobs=JOBS, pipes=PIPES, storage=storage(), **options) as first:
                await run_first(first)
        queue = Queue(jobs=JOBS, pipes=PIPES, storage=storage(), **options)
        await queue.start(worker=worker)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api_app(queue, token=token)),
            base_url="http://127.0.0.1:4000",
        )
        opened.append((queue, client))
        return Api(queue, client, snapshot_of(queue.storage))

    yield make
    for queue, client in opened:
        await client.aclose()
        await queue.stop()


@pytest_asyncio.fixture
async def api(make_api: MakeApi) -> Api:
    """The API over an empty SQLite file."""
    return await make_api()
