"""The benchmark workloads on PostgreSQL: a throw-away PostgreSQL 15 server on this
machine (``tests/services.py``: initdb defaults, fsync and synchronous_commit on),
sharing its cores with the workers.

    python benchmarks/postgres.py [--only NAME ...] [--quick]

Workloads: enqueue (1 per call, beside a raw one-row-per-commit psycopg loop), drain of
5,000 no-op jobs by 1, 2 and 4 worker processes, latency (enqueue then ``result()``,
worker in another process), steps (sequential and concurrent, beside the raw loop),
fan-out of 200 children. Each runs on a fresh schema.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_app  # noqa: E402

from services import PostgresServer  # noqa: E402

_schemas = itertools.count()


def fresh(url: str) -> str:
    return f"{url}?schema=bench_{os.getpid()}_{next(_schemas)}"


def spawn(url: str, n: int = 1) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "QANAT_BENCH_STORAGE": url}
    cmd = [sys.executable, "-m", "qanat", "worker", "bench_app:queue"]
    quiet = subprocess.DEVNULL
    return [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=quiet, stderr=quiet) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def raw_commits(url: str, n: int) -> float:
    """The server's one-row-per-commit limit: psycopg, ``INSERT`` then ``COMMIT`` of a
    small row, ``n`` times (what an enqueue or a checkpoint costs at least with
    ``synchronous_commit`` on: one WAL flush each). Rows per second."""
    schema = url.split("schema=")[1]
    with psycopg.connect(url.split("?")[0]) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}_raw")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}_raw.t (id bigserial PRIMARY KEY, body text)"
        )
        conn.commit()
        t = time.perf_counter()
        for _ in range(n):
            conn.execute(f"INSERT INTO {schema}_raw.t (body) VALUES (%s)", ("x" * 200,))
            conn.commit()
        return n / (time.perf_counter() - t)


async def enqueue(url: str, n: int) -> dict[str, float]:
    """One ``start()`` per call; on PostgreSQL in rounds alternating with the raw commit
    loop, so the ratio compares the same minutes of the disk (``redis_storage.py`` runs
    this on Redis, without the raw loop)."""
    paired = url.startswith("postgres")
    # no worker in this process (as in run.py): only the enqueues use the connection
    q = bench_app.make_queue(url)
    await q.start(worker=False)
    rounds, took, raw = 4, 0.0, []
    try:
        for _ in range(20):
            await q.jobs.noop.start()
        for _ in range(rounds):
            if paired:
                raw.append(raw_commits(url, n // rounds))
            t = time.perf_counter()
            for _ in range(n // rounds):
                await q.jobs.noop.start()
            took += time.perf_counter() - t
    finally:
        await q.stop()
    per_s = rounds * (n // rounds) / took
    if not paired:
        return {"per_s": per_s}
    raw_per_s = statistics.median(raw)
    return {"per_s": per_s, "raw_commit_per_s": raw_per_s, "ratio_to_raw": per_s / raw_per_s}


async def drain(url: str, n: int, workers: int) -> dict[str, float]:
    q = bench_app.make_queue(url)
    await q.start(worker=False)
    try:
        for i in range(0, n, 1000):
            await q.jobs.noop.start_many([{}] * min(1000, n - i))
    finally:
        await q.stop()
    schema = url.split("schema=")[1]
    conninfo = url.split("?")[0]
    procs = spawn(url, workers)
    try:
        with psycopg.connect(conninfo, autocommit=True) as watch:
            left = f"SELECT count(*) FROM {schema}.executions WHERE status <> 'completed'"
            while watch.execute(left).fetchone()[0] > 0:  # type: ignore[index]
                await asyncio.sleep(0.05)
            first, last = watch.execute(
                f"SELECT min(started_at), max(completed_at) FROM {schema}.executions"
            ).fetchone()  # type: ignore[misc]
    finally:
        stop(procs)
    return {"steady_per_s": n / (last - first)}


async def latency(url: str, n: int) -> dict[str, float]:
    procs = spawn(url)
    # the client runs no worker: the one in the other process claims every job
    q = bench_app.make_queue(url)
    await q.start(worker=False)
    try:
        for _ in range(20):
            await (await q.jobs.noop.start()).result(timeout=60)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await (await q.jobs.noop.start()).result(timeout=60)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        await q.stop()
        stop(procs)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * len(times)) - 1]}


async def steps(url: str, n: int) -> dict[str, float]:
    async with bench_app.make_queue(url) as q:
        await q.jobs.ten_steps.run()
        t = time.perf_counter()
        for _ in range(n):
            await q.jobs.ten_steps.run()
        seq = n * 10 / (time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*[q.jobs.ten_steps.run() for _ in range(n)])
        conc = n * 10 / (time.perf_counter() - t)
    out = {"sequential_per_s": seq, "concurrent_per_s": conc}
    if url.startswith("postgres"):  # a checkpoint is one commit: beside the raw loop
        out["raw_commit_per_s"] = raw = raw_commits(url, 1000)
        out["sequential_ratio_to_raw"] = seq / raw
    return out


#: Timed fan-outs (after two untimed ones): one of 200 children takes 30-50 ms, short
#: enough for a moment's noise on a 2-core machine to halve it, so the median is reported.
FANOUT_ROUNDS = 5


async def fanout(url: str, n: int) -> dict[str, float]:
    async with bench_app.make_queue(url) as q:
        await q.jobs.fan_out.run(n=10)
        await q.jobs.fan_out.run(n=n)
        rates = []
        for _ in range(FANOUT_ROUNDS):
            t = time.perf_counter()
            done = await q.jobs.fan_out.run(n=n)
            rates.append(n / (time.perf_counter() - t))
            assert done == n
        return {
            "children_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["enqueue", "drain1", "drain2", "drain4", "latency", "steps", "fanout"]
    parser.add_argument("--only", nargs="+", choices=names)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting (repeatable); fsync and synchronous_commit stay on",
    )
    args = parser.parse_args()
    small = args.quick
    settings = dict(s.split("=", 1) for s in args.pg_setting)
    for kept in ("fsync", "synchronous_commit", "full_page_writes"):
        if kept in settings:
            parser.error(f"--pg-setting {kept}=...: durability settings are not changed here")
    server = PostgresServer(settings)
    server.start()
    out: dict[str, Any] = {}
    try:
        url = server.url
        plan = {
            "enqueue": lambda: enqueue(fresh(url), 300 if small else 2000),
            "drain1": lambda: drain(fresh(url), 1000 if small else 5000, 1),
            "drain2": lambda: drain(fresh(url), 1000 if small else 5000, 2),
            "drain4": lambda: drain(fresh(url), 1000 if small else 5000, 4),
            "latency": lambda: latency(fresh(url), 50 if small else 300),
            "steps": lambda: steps(fresh(url), 10 if small else 100),
            "fanout": lambda: fanout(fresh(url), 200),
        }
        for name in args.only or names:
            out[name] = await plan[name]()
            print(name, {k: round(v, 2) for k, v in out[name].items()}, flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
