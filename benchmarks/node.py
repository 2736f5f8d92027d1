"""The orchestration node's benchmarks (issue 10): HTTP workers and clients against a
``qanat serve`` subprocess over SQLite, beside the direct SQLite figures of the same run.

    python benchmarks/node.py [--n 20000] [--latency 300] [--steps 50]

Workloads, each on a fresh database:

* drain: ``n`` no-op jobs pre-enqueued, then drained by one direct ``qanat worker``
  on the SQLite file, by one HTTP worker process, and by two (steady rate: first
  claim to last completion, as in ``run.py``); the HTTP enqueue goes through an HTTP
  client queue (``start_many`` in chunks of 1,000), and one-at-a-time enqueues too;
* latency: enqueue then ``result()`` through an HTTP client, one HTTP worker process;
* steps: ten checkpointed no-op steps per execution, one execution after another,
  with the worker in this process on HTTP storage (and directly on SQLite).

Targets (issue 10): drain over HTTP >= 50 % of the direct drain of the same run,
latency p50 <= 5 ms, sequential steps >= 500/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_app  # noqa: E402

from node_server import TOKEN, NodeServer  # noqa: E402

CHUNK = 1000
LEFT = (
    "SELECT count(*) FROM executions WHERE available_at IS NOT NULL "
    "AND status IN ('pending', 'running', 'waiting')"
)


def node_for(db: Path) -> NodeServer:
    env = {**os.environ, "QANAT_BENCH_DB": str(db)}
    env.pop("QANAT_BENCH_STORAGE", None)
    node = NodeServer(HERE, db, app="bench_app:queue", env=env)
    node.log = db.with_suffix(".node.log")
    node.start()
    return node


def spawn(storage: str, n: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "QANAT_BENCH_STORAGE": storage, "QANAT_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "qanat", "worker", "bench_app:queue"]
    quiet = subprocess.DEVNULL
    return [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=quiet, stderr=quiet) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)


async def enqueue(storage: str, n: int) -> dict[str, float]:
    q = bench_app.make_queue(storage)
    await q.start(worker=False)
    try:
        t = time.perf_counter()
        for i in range(0, n, CHUNK):
            await q.jobs.noop.start_many([{}] * min(CHUNK, n - i))
        many = n / (time.perf_counter() - t)
        single_n = 500
        t = time.perf_counter()
        for _ in range(single_n):
            await q.jobs.noop.start()
        single = single_n / (time.perf_counter() - t)
    finally:
        await q.stop()
    return {"start_many_per_s": many, "start_per_s": single}


async def drain(db: Path, storage: str, workers: int, n: int) -> dict[str, float]:
    """Enqueue ``n`` (+500 one by one) through ``storage``, then drain with processes."""
    rates = await enqueue(storage, n)
    total = n + 500
    watch = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    spawned = time.time()
    procs = spawn(storage, workers)
    try:
        while watch.execute(LEFT).fetchone()[0] > 0:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited before the drain finished")
            await asyncio.sleep(0.05)
    finally:
        stop(procs)
    first, last, done = watch.execute(
        "SELECT min(started_at), max(completed_at), count(*) FROM executions "
        "WHERE status = 'completed'"
    ).fetchone()
    watch.close()
    assert done == total, f"{done} of {total} completed"
    return {
        "steady_per_s": total / (last - first),
        "with_startup_per_s": total / (last - spawned),
        **rates,
    }


async def latency(storage: str, n: int) -> dict[str, float]:
    q = bench_app.make_queue(storage)
    await q.start(worker=False)
    procs = spawn(storage, 1)
    try:
        for _ in range(20):
            await (await q.jobs.noop.start()).result(timeout=60)
        times: list[float] = []
        for _ in range(n):
            t = time.perf_counter()
            await (await q.jobs.noop.start()).result(timeout=60)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        stop(procs)
        await q.stop()
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[max(0, math.ceil(0.95 * len(times)) - 1)],
        "mean_ms": statistics.fmean(times),
    }


async def steps(storage: str, n: int) -> float:
    async with bench_app.make_queue(storage) as q:
        await q.jobs.ten_steps.run()
        t = time.perf_counter()
        for _ in range(n):
            await q.jobs.ten_steps.run()
        return n * 10 / (time.perf_counter() - t)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--latency", type=int, default=300)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    os.environ["QANAT_TOKEN"] = TOKEN
    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="qanat-node-bench-") as tmp:
        root = Path(tmp)
        direct = root / "direct.db"
        out["direct_drain"] = await drain(direct, f"sqlite:///{direct}", 1, args.n)
        for workers in (1, 2):
            db = root / f"http{workers}.db"
            node = node_for(db)
            try:
                out[f"http_drain_{workers}"] = await drain(db, node.url, workers, args.n)
            finally:
                node.stop()
        db = root / "latency.db"
        node = node_for(db)
        try:
            out["http_latency"] = await latency(node.url, args.latency)
            out["http_steps_per_s"] = await steps(node.url, args.steps)
        finally:
            node.stop()
        out["direct_steps_per_s"] = await steps(f"sqlite:///{root / 'steps.db'}", args.steps)
    base = out["direct_drain"]["steady_per_s"]
    for workers in (1, 2):
        out[f"http_drain_{workers}"]["ratio_to_direct"] = (
            out[f"http_drain_{workers}"]["steady_per_s"] / base
        )
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
