"""The benchmark workloads on Redis: a throw-away redis-server on this machine
(``tests/services.py``: AOF on, ``appendfsync everysec`` unless ``--fsync always``),
sharing its cores with the workers.

    python benchmarks/redis_storage.py [--only NAME ...] [--quick] [--fsync always]

The same workloads as ``postgres.py`` (its functions, run on a ``redis://`` URL; only
the drain's progress watch differs): enqueue (1 per call), drain of 5,000 no-op jobs by
1, 2 and 4 worker processes, latency (enqueue then ``result()``, worker in another
process), steps (sequential and concurrent), fan-out of 200 children. Each runs on a
fresh key prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_app  # noqa: E402
from postgres import enqueue, fanout, latency, spawn, steps, stop  # noqa: E402

from qanat.storage.base import ExecutionFilter  # noqa: E402
from services import RedisServer  # noqa: E402

_prefixes = itertools.count()


def fresh(url: str) -> str:
    return f"{url}?prefix=bench_{os.getpid()}_{next(_prefixes)}"


async def drain(url: str, n: int, workers: int) -> dict[str, float]:
    q = bench_app.make_queue(url)
    await q.start(worker=False)
    try:
        for i in range(0, n, 1000):
            await q.jobs.noop.start_many([{}] * min(1000, n - i))
        procs = spawn(url, workers)
        try:
            while (await q.storage.stats()).by_status["completed"] < n:
                await asyncio.sleep(0.05)
        finally:
            stop(procs)
        page = await q.storage.query(ExecutionFilter(job=["noop"]), n, None)
        first = min(r.started_at or 0.0 for r in page.items)
        last = max(r.completed_at or 0.0 for r in page.items)
    finally:
        await q.stop()
    return {"steady_per_s": n / (last - first)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["enqueue", "drain1", "drain2", "drain4", "latency", "steps", "fanout"]
    parser.add_argument("--only", nargs="+", choices=names)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--fsync", choices=["everysec", "always"], default="everysec")
    args = parser.parse_args()
    small = args.quick
    server = RedisServer(fsync=args.fsync)
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
