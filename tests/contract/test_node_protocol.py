"""The node's worker protocol beyond the storage contract (issue 10), in process: a real
node app (``build_app``) over a real SQLite file, reached by ``HttpStorage`` through
httpx's ASGI transport. Fenced reports answered 409 item by item, idempotent retries
(also when the first try was applied and its answer lost), 413 over ``max_payload``,
the long poll waking waiters at once, and clear errors at ``open``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from qanat import Queue, job
from qanat.engine import watcher as watcher_module
from qanat.engine import worker as worker_module
from qanat.errors import PayloadTooLarge, StorageError
from qanat.server.app import build_app
from qanat.storage import Checkpoint, ExecutionRecord, Finish, SqliteStorage, StepRecord
from qanat.storage.base import now
from qanat.storage.http import HttpStorage, wire
from qanat.storage.http.protocol import PREFIX

TOKEN = "protocol-token"
LEASE = 30.0


def rec(ident: str, input: str = "{}") -> ExecutionRecord:
    t = now() - 1
    return ExecutionRecord(id=ident, job="j", input=input, created_at=t, run_at=t, available_at=t)


def step(eid: str, key: str, result: str = '"ok"') -> StepRecord:
    return StepRecord(eid, key, "run", key, "completed", result, started_at=1.0, finished_at=2.0)


@pytest_asyncio.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    node_queue = Queue(storage=SqliteStorage(str(tmp_path / "node.db")), max_payload="4KB")
    application = build_app(node_queue, token=TOKEN)
    try:
        yield application
    finally:
        await application.state.node.stop()


async def client(app: Any, transport: Any = None) -> HttpStorage:
    store = HttpStorage("http://node", token=TOKEN, transport=transport or app, retry_for=5)
    await store.open()
    return store


def raw(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://node" + PREFIX,
        headers={"authorization": f"Bearer {TOKEN}"},
    )


async def test_a_stale_report_gets_409_for_its_item_only(app: Any) -> None:
    store = await client(app)
    try:
        await store.enqueue([rec("a"), rec("b")])
        [a] = await store.claim("w1", ["j"], 1, LEASE)
        [b] = await store.claim("w2", ["j"], 1, LEASE)
        assert await store.expire_owner("w1") == 1
        [again] = await store.claim("w2", ["j"], 1, LEASE)
        assert again.id == a.id
        items = [
            # w1 lost a: refused; w2 holds b: applied; a lease naming another owner: refused
            {"op": "checkpoint", "args": {"execution_id": a.id, "owner": "w1", "lease": "1.w1",
                                          "cp": {"step": step(a.id, "s1", '"stale"')}}},
            {"op": "checkpoint", "args": {"execution_id": b.id, "owner": "w2", "lease": "1.w2",
                                          "cp": {"step": step(b.id, "s1")}}},
            {"op": "finish", "args": {"execution_id": b.id, "owner": "w2", "lease": "1.w1",
                                      "fin": {"status": "completed", "output": "1"}}},
            {"op": "drop_table", "args": {}},
        ]  # fmt: skip
        async with raw(app) as http:
            r = await http.post("/report", content=wire.dumps({"items": items}))
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["status"] for x in results] == [409, 200, 409, 400]
        assert results[0]["result"] == "lost" and results[2]["result"] is False
        assert "drop_table" in results[3]["error"]
        assert await store.steps(a.id) == []  # nothing of the stale worker's stored
        assert [s.key for s in await store.steps(b.id)] == ["s1"]
        held = await store.get(b.id)
        assert held is not None and held.status == "running" and held.owner == "w2"
        # through the client: the same refusals, as the contract's return values
        assert await store.checkpoint(a.id, "w1", Checkpoint(step(a.id, "s2"))) == "lost"
        assert await store.finish(a.id, "w1", Finish("completed", output="2")) is False
    finally:
        await store.close()


class DropFirstAnswer(httpx.AsyncBaseTransport):
    """Sends requests to the node, but loses the answer to the first ``/report`` it sees
    after being armed, as a network cut after the node applied it would."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.armed = False
        self.retried: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.headers.get("x-qanat-retry"):
            self.retried.append(request.url.path)
        if self.armed and request.url.path.endswith("/report"):
            self.armed = False
            await response.aread()
            raise httpx.ReadError("connection reset after the node answered")
        return response


async def test_a_report_applied_then_retried_is_applied_once(app: Any) -> None:
    flaky = DropFirstAnswer(app)
    store = await client(app, flaky)
    try:
        await store.enqueue([rec("a")])
        [a] = await store.claim("w", ["j"], 1, LEASE)
        flaky.armed = True  # a checkpoint with a child: applied, its answer lost, retried
        child = rec("child")
        assert await store.checkpoint(a.id, "w", Checkpoint(step(a.id, "s1"), [child])) is None
        assert flaky.retried == [PREFIX + "/report"]
        assert [s.key for s in await store.steps(a.id)] == ["s1"]
        assert (await store.get("child")) is not None
        flaky.armed = True  # the finish: applied, answer lost, retried: still True, once
        assert await store.finish(a.id, "w", Finish("completed", output="7")) is True
        done = await store.get(a.id)
        assert done is not None and done.status == "completed" and done.output == "7"
        assert done.claims == 1 and done.attempt == 1
        # a real second finish (no retry flag) by the same worker is refused
        assert await store.finish(a.id, "w", Finish("completed", output="8")) is False
        kept = await store.get(a.id)
        assert kept is not None and kept.output == "7"
    finally:
        await store.close()


async def test_a_retried_finish_after_another_claim_is_refused(app: Any) -> None:
    store = await client(app)
    try:
        await store.enqueue([rec("a")])
        [a] = await store.claim("w", ["j"], 1, LEASE)
        await store.expire_owner("w")
        [b] = await store.claim("other", ["j"], 1, LEASE)
        assert await store.finish(b.id, "other", Finish("completed", output="1"))
        body = {
            "items": [{"op": "finish", "args": {"execution_id": a.id, "owner": "w",
                       "lease": "1.w", "fin": {"status": "completed", "output": "1"}}}]
        }  # fmt: skip
        async with raw(app) as http:
            r = await http.post("/report", content=wire.dumps(body), headers={"x-qanat-retry": "1"})
        # the record says completed with that output, but by claim 2: not this report's
        assert r.json()["results"][0]["status"] == 409
    finally:
        await store.close()


async def test_a_body_over_max_payload_gets_413_and_stores_nothing(app: Any) -> None:
    store = await client(app)
    try:
        big = rec("big", input='"' + "x" * 100_000 + '"')
        with pytest.raises(PayloadTooLarge, match="over the node's limit"):
            await store.enqueue([big])
        assert await store.get("big") is None
        async with raw(app) as http:
            r = await http.post("/call/enqueue", content=b"[" + b" " * 100_000 + b"]")
        assert r.status_code == 413 and "limit" in r.json()["error"]
    finally:
        await store.close()


async def test_bad_requests_name_what_was_wrong(app: Any) -> None:
    async with raw(app) as http:
        r = await http.post("/call/get", json={"id": "x"})
        assert r.status_code == 400 and "unknown argument(s) id for get" in r.json()["error"]
        r = await http.post("/call/__init__", json={})
        assert r.status_code == 400 and "unknown node method" in r.json()["error"]
        r = await http.post("/call/get", content=b"{not json")
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        for path in ("/nope", "/call", "/call/", "/claim/extra"):
            r = await http.post(path, json={})
            assert r.status_code == 404 and "no node route" in r.json()["error"], path
        r = await http.get("/claim")
        assert r.status_code == 405 and "/claim takes POST, not GET" in r.json()["error"]
        r = await http.get("/hello", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and "wrong bearer token" in r.json()["error"]


@job
async def double(x: int) -> int:
    return 2 * x


@contextlib.asynccontextmanager
async def worker_and_waiter(app: Any, waiter_transport: Any = None) -> AsyncIterator[Queue]:
    """A worker queue and a client queue (no worker), each on its own ``HttpStorage``
    to the node ``app``; yields the client, after one warm-up round trip."""
    worker = Queue(jobs=[double], storage=HttpStorage("http://node", TOKEN, transport=app))
    transport = waiter_transport or app
    waiter = Queue(jobs=[double], storage=HttpStorage("http://node", TOKEN, transport=transport))
    await worker.start()
    await waiter.start(worker=False)
    try:
        e = await waiter.jobs.double.start(21)
        assert await asyncio.wait_for(e.result(), 10) == 42  # warm: the long polls are open
        yield waiter
    finally:
        await worker.stop()
        await waiter.stop()


async def test_waiting_clients_are_woken_by_the_long_poll_at_once(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fallback polls slowed far beyond the bound below, so only the node's long
    # poll can make the round trips fast, however loaded the machine is.
    monkeypatch.setattr(worker_module, "FALLBACK_POLL", 5.0)
    monkeypatch.setattr(watcher_module, "BELL_POLL", 5.0)
    async with worker_and_waiter(app) as waiter:
        took = []
        for i in range(5):
            began = time.perf_counter()
            e = await waiter.jobs.double.start(i)
            assert await asyncio.wait_for(e.result(), 10) == 2 * i
            took.append(time.perf_counter() - began)
        assert sorted(took)[2] < 2.0, took


async def test_open_says_what_is_wrong(app: Any, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="refused the token"):
        await HttpStorage("http://node", "wrong", transport=app).open()

    async def old_node(scope: Any, receive: Any, send: Any) -> None:
        body = b'{"protocol": 99, "boot": "x"}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    with pytest.raises(StorageError, match="protocol version 99"):
        await HttpStorage("http://node", TOKEN, transport=old_node).open()
    with pytest.raises(StorageError, match=r"cannot reach the qanat node at http://127\.0\.0\.1:9"):
        await HttpStorage("http://127.0.0.1:9", TOKEN).open()
    with pytest.raises(StorageError, match="no query or credentials"):
        HttpStorage("http://node:4000/?token=abc")


async def test_a_waiting_client_reads_its_executions_from_the_long_poll(app: Any) -> None:
    # The long poll names the executions the client waits for; the node answers it with
    # their records, so a result() costs about one read of its own (the first), not one
    # after every commit the job makes (enqueue, claim, finish).
    reads: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith(("/call/get", "/call/get_many")):
            reads.append(scope["path"])
        await app(scope, receive, send)

    async with worker_and_waiter(app, counting) as waiter:
        reads.clear()
        n = 10
        for i in range(n):
            e = await waiter.jobs.double.start(i)
            assert await asyncio.wait_for(e.result(), 10) == 2 * i
        # one read per result, a second only when a change overtook it
        assert len(reads) <= 2 * n, reads
        assert all(r.endswith("/call/get_many") for r in reads), reads  # no get first
