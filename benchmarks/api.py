"""Enqueue through the HTTP API (``POST /api/jobs/noop/start``) against the same call made
directly on the queue, in the same run, on SQLite (synchronous=FULL).

    python benchmarks/api.py [--n 2000] [--in-flight 16] [--runs 3]

The API is ``api_app`` mounted at ``/api`` in an in-process uvicorn (h11) bound to
127.0.0.1 on a free port. The client runs in a process of its own, on keep-alive
connections: httpx (what a Python script uses), and a minimal hand-written HTTP/1.1
client that costs next to nothing, so that its figure is the server's capacity. Each
workload runs on a fresh database: one request at a time (each durable before the
next) and ``--in-flight`` at once (group commit shares the fsync).
The direct figure is ``queue.start_execution``, the call the route makes. Medians of
``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from qanat import Queue, job
from qanat.server.api import api_app


@job
async def noop(n: int) -> int:
    return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _paced(n: int, in_flight: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Calls per second of ``call(i)`` for ``i < n``, ``in_flight`` at a time."""
    start = time.perf_counter()
    for i in range(0, n, in_flight):
        await asyncio.gather(*(call(k) for k in range(i, min(n, i + in_flight))))
    return n / (time.perf_counter() - start)


async def direct(db: Path, n: int, in_flight: int) -> float:
    q = Queue(jobs=[noop], storage=f"sqlite:///{db}")
    await q.start(worker=False)
    try:
        return await _paced(n, in_flight, lambda i: q.start_execution(noop, (), {"n": i}, {}))
    finally:
        await q.stop()


def _client(port: int, n: int, in_flight: int, kind: str, out: Any) -> None:
    """In a process of its own: POST ``n`` starts, ``in_flight`` at a time; send the rate.

    ``kind`` is ``httpx`` (what a Python script uses) or ``raw``: HTTP/1.1 written on
    keep-alive sockets by hand, so that the figure is the server's, not the client's
    (httpx costs about as much CPU per request as the server does)."""
    out.send(asyncio.run((_httpx_starts if kind == "httpx" else _raw_starts)(port, n, in_flight)))


async def _httpx_starts(port: int, n: int, in_flight: int) -> float:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as c:
        await asyncio.gather(*(c.get("/api/health") for _ in range(in_flight)))  # connect

        async def start(i: int) -> None:
            r = await c.post("/api/jobs/noop/start", json={"input": {"n": i}})
            if r.status_code != 201:
                raise RuntimeError(f"start answered {r.status_code}: {r.text}")

        return await _paced(n, in_flight, start)


async def _raw_starts(port: int, n: int, in_flight: int) -> float:
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(in_flight)]
    todo = iter(range(n))

    async def loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in todo:
            body = b'{"input": {"n": %d}}' % i
            writer.write(
                b"POST /api/jobs/noop/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 201"):
                raise RuntimeError(f"start answered {head!r}")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)

    start = time.perf_counter()
    await asyncio.gather(*(loop(r, w) for r, w in conns))
    rate = n / (time.perf_counter() - start)
    for _, w in conns:
        w.close()
    return rate


async def over_http(db: Path, n: int, in_flight: int, *, client: str) -> float:
    """Starts per second through the API, the client in another process."""
    q = Queue(jobs=[noop], storage=f"sqlite:///{db}")
    await q.start(worker=False)
    port = _free_port()
    app = Starlette(routes=[Mount("/api", app=api_app(q))])
    server = uvicorn.Server(
        # Keep-alive longer than uvicorn's 5 s: on a loaded machine a connection can sit
        # idle that long between batches, and a close racing the next request is a
        # ReadError in httpx, not a measurement.
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                       timeout_keep_alive=60)
    )  # fmt: skip
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # uvicorn sets it once the socket listens
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        ctx = multiprocessing.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_client, args=(port, n, in_flight, client, send))
        proc.start()
        loop = asyncio.get_running_loop()
        send.close()  # ours: a client that dies ends recv() with EOFError, not a hang
        try:
            rate: float = await loop.run_in_executor(None, recv.recv)
        finally:
            await loop.run_in_executor(None, proc.join)
        stats = await q.stats()
        assert stats["by_job"]["noop"]["pending"] == n, stats
        return rate
    finally:
        server.should_exit = True
        await serving
        await q.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    workloads = (
        ("direct", direct),
        ("httpx client", functools.partial(over_http, client="httpx")),
        ("raw client", functools.partial(over_http, client="raw")),
    )
    with tempfile.TemporaryDirectory(prefix="qanat-api-") as tmp:
        for run in range(args.runs):
            for flight in (1, args.in_flight):
                for name, fn in workloads:
                    db = Path(tmp) / f"{name.replace(' ', '')}-{flight}-{run}.db"
                    rate = asyncio.run(fn(db, args.n, flight))
                    rows.setdefault(f"{name} x{flight}", []).append(rate)
    med = {k: statistics.median(v) for k, v in rows.items()}
    for flight in (1, args.in_flight):
        d = med[f"direct x{flight}"]
        print(f"{flight:>3} in flight: direct queue.start_execution {d:8,.0f}/s")
        for name, _ in workloads[1:]:
            h = med[f"{name} x{flight}"]
            print(
                f"{'':16}POST /api/jobs/noop/start ({name:>12}) {h:8,.0f}/s = {h / d:6.1%}"
                f" of direct ({1000 / h:.2f} ms per request at this concurrency)"
            )
    print("runs:", {k: [round(x) for x in v] for k, v in rows.items()})


if __name__ == "__main__":
    main()
