"""The API over a real socket: uvicorn in this process on 127.0.0.1 (a free port), httpx
as the client. The ASGI transport of the other tests skips HTTP itself; here bodies,
Content-Length, keep-alive and the early 413 go through uvicorn's parser."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from api_support import JOBS, PIPES
from qanat import Queue
from qanat.server.api import api_app
from support import eventually


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest_asyncio.fixture
async def served(tmp_path: object) -> AsyncIterator[tuple[Queue, str]]:
    queue = Queue(jobs=JOBS, pipes=PIPES, storage=f"sqlite:///{tmp_path}/socket.db",
                  max_payload="4KB")  # fmt: skip
    await queue.start(worker=False)
    port = _free_port()
    app = Starlette(routes=[Mount("/api", app=api_app(queue, token="t0k"))])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await eventually(started)
    try:
        yield queue, f"http://127.0.0.1:{port}/api"
    finally:
        server.should_exit = True
        await task
        await queue.stop()


async def test_the_api_over_a_real_socket(served: tuple[Queue, str]) -> None:
    queue, url = served
    auth = {"Authorization": "Bearer t0k"}
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/health")).status_code == 401
        r = await c.post("/jobs/add/start", json={"input": {"a": 41}}, headers=auth)
        assert r.status_code == 201, r.text
        one = await c.get(f"/executions/{r.json()['id']}", headers=auth)
        assert one.json()["input"] == {"a": 41, "b": 1}
        doc = (await c.get("/openapi.json", headers=auth)).json()
        assert doc["servers"] == [{"url": "/api"}]
        before = await queue.stats()
        big = b'{"input": {"why": "' + b"x" * 200_000 + b'"}}'
        r = await c.post(
            "/jobs/boom/start",
            content=big,
            headers=auth | {"content-type": "application/json"},
        )
        assert r.status_code == 413 and "request body" in r.json()["error"]
        assert await queue.stats() == before
