"""The qanat benchmark suite: SQLite at synchronous=FULL, beside a raw sqlite3 baseline.

    python benchmarks/run.py [--only NAME ...] [--runs N] [--quick]

Workloads: raw (baseline loops), enqueue, drain, latency, steps, fanout. Each run uses
a fresh database in a temporary folder; figures are medians over ``--runs``. Results
are printed as a table and written to ``benchmarks/out/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"


def _app(db: Path) -> Any:
    """Import the benchmark app fresh, bound to ``db``."""
    os.environ["QANAT_BENCH_DB"] = str(db)
    sys.modules.pop("benchmarks.bench_app", None)
    sys.path.insert(0, str(ROOT))
    import benchmarks.bench_app as app

    return app


# --- baseline -----------------------------------------------------------------------


def raw_loop(db: Path, n: int, per_commit: int) -> float:
    """Rows/s of plain sqlite3 (WAL, synchronous=FULL) inserting execution-shaped rows."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE t (id TEXT PRIMARY KEY, job TEXT, input TEXT, status TEXT,"
        " priority INTEGER, created_at REAL, available_at REAL)"
    )
    start = time.perf_counter()
    for i in range(0, n, per_commit):
        now = time.time()
        rows = [(f"{i + j:024x}", "noop", "{}", "pending", 0, now, now) for j in range(per_commit)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


# --- workloads ----------------------------------------------------------------------


async def enqueue(db: Path, n: int) -> dict[str, float]:
    """``await start()`` one call at a time, each durable before it returns."""
    q = _app(db).queue
    await q.start(worker=False)
    try:
        start = time.perf_counter()
        for _ in range(n):
            await q.jobs.noop.start()
        elapsed = time.perf_counter() - start
    finally:
        await q.stop()
    return {"per_s": n / elapsed}


def _worker(db: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QANAT_BENCH_DB": str(db), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "qanat", "worker", "benchmarks.bench_app:queue", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def drain(db: Path, n: int) -> dict[str, float]:
    """Pre-enqueue ``n`` no-op jobs, then one ``qanat worker`` process drains them."""
    q = _app(db).queue
    await q.start(worker=False)
    for i in range(0, n, 1000):
        await q.jobs.noop.start_many([{}] * min(1000, n - i))
    await q.stop()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    spawned = time.time()
    proc = _worker(db)
    try:
        while True:
            (done,) = conn.execute(
                "SELECT count(*) FROM executions WHERE status = 'completed'"
            ).fetchone()
            if done >= n:
                break
            if proc.poll() is not None:
                raise RuntimeError("the worker exited before the drain finished")
            await asyncio.sleep(0.02)  # polling for the end of a benchmark run
        rss = _peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
    first, last = conn.execute(
        "SELECT min(started_at), max(completed_at) FROM executions"
    ).fetchone()
    conn.close()
    return {
        "with_startup_per_s": n / (last - spawned),
        "steady_per_s": n / (last - first),
        "peak_rss_mb": rss,
    }


async def latency(db: Path, n: int) -> dict[str, float]:
    """Enqueue -> result round trips with the worker in another process."""
    q = _app(db).queue
    await q.start(worker=False)
    proc = _worker(db)
    try:
        for _ in range(20):  # warm-up, and waits for the worker to be up
            await (await q.jobs.noop.start()).result(timeout=60)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await (await q.jobs.noop.start()).result(timeout=60)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        _stop(proc)
        await q.stop()
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p95_ms": times[int(len(times) * 0.95) - 1]}


async def steps(db: Path, n: int) -> dict[str, float]:
    """``n`` executions of 10 checkpointed steps: one after another, then all at once."""
    q = _app(db).queue
    async with q:
        await q.jobs.ten_steps.run()  # warm-up
        t = time.perf_counter()
        for _ in range(n):
            await q.jobs.ten_steps.run()
        seq = n * 10 / (time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*[q.jobs.ten_steps.run() for _ in range(n)])
        conc = n * 10 / (time.perf_counter() - t)
    return {"sequential_per_s": seq, "concurrent_per_s": conc}


async def fanout(db: Path, n: int) -> dict[str, float]:
    """One parent starts ``n`` children and awaits them all."""
    q = _app(db).queue
    async with q:
        await q.jobs.fan_out.run(n=10)  # warm-up
        t = time.perf_counter()
        assert await q.jobs.fan_out.run(n=n) == n
        elapsed = time.perf_counter() - t
    return {"children_per_s": n / elapsed}


# --- the suite ----------------------------------------------------------------------


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="workloads to run (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (smoke)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    sizes = {
        "enqueue": 5000 // scale,
        "drain": 20000 // scale,
        "latency": 300 // scale,
        "steps": 100 // scale,
        "fanout": 200,
    }
    workloads: dict[str, Callable[[Path, int], Any]] = {
        "enqueue": enqueue,
        "drain": drain,
        "latency": latency,
        "steps": steps,
        "fanout": fanout,
    }
    chosen = args.only or ["raw", *workloads]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="qanat-bench-") as tmp:
        counter = iter(range(10_000))

        def fresh() -> Path:
            return Path(tmp) / f"b{next(counter)}.db"

        if "raw" in chosen:
            n = 5000 // scale
            results["raw"] = _median(
                [
                    {
                        "one_row_per_s": raw_loop(fresh(), n, 1),
                        "hundred_rows_per_s": raw_loop(fresh(), n * 4, 100),
                    }
                    for _ in range(runs)
                ]
            )
            print(f"raw        {results['raw']}", flush=True)
        for name, fn in workloads.items():
            if name not in chosen:
                continue
            out = [asyncio.run(fn(fresh(), sizes[name])) for _ in range(runs)]
            results[name] = {"n": sizes[name], **_median(out)}
            print(f"{name:10} {results[name]}", flush=True)
    if "raw" in results and "enqueue" in results:
        results["enqueue"]["pct_of_raw"] = (
            100 * results["enqueue"]["per_s"] / results["raw"]["one_row_per_s"]
        )
    if "raw" in results and "steps" in results:
        results["steps"]["sequential_pct_of_raw"] = (
            100 * results["steps"]["sequential_per_s"] / results["raw"]["one_row_per_s"]
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
