"""The qanat benchmark suite: SQLite at synchronous=FULL, beside a raw sqlite3 baseline.

    python benchmarks/run.py [--only NAME ...] [--runs N] [--quick]

Workloads: raw (the sqlite3 baseline loops), enqueue, drain, latency, steps, fanout.
Every run of every workload is a fresh Python process on a fresh database in its own
temporary folder; figures are medians over ``--runs`` (3 by default). The table is
printed and the figures are written to ``benchmarks/out/results-<time>.json`` and
``benchmarks/out/results.json``. ``--quick`` runs small sizes once (a smoke test that
takes well under 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
WORKLOADS = ("raw", "enqueue", "drain", "latency", "steps", "fanout")
SIZES = {"raw": 5000, "enqueue": 5000, "drain": 20000, "latency": 300, "steps": 100, "fanout": 200}
QUICK = {"raw": 500, "enqueue": 500, "drain": 2000, "latency": 30, "steps": 10, "fanout": 200}
LATENCY_WARMUP = 20
DRAIN_CHUNK = 1000
QUIET_CORES = 0.25  # before each run, wait until neighbours use less than this
QUIET_WAIT = 10.0  # ... but no longer than this (seconds; the suite stays under ~5 min)
POLL = 0.02  # how often the drain's parent looks for the end (does not bound the figures)

#: (workload, metric, label, target, higher is better); the targets of the issue.
TARGETS: list[tuple[str, str, str, float | None, bool]] = [
    ("raw", "one_row_per_s", "raw sqlite3, 1 row/commit (rows/s)", None, True),
    ("raw", "hundred_rows_per_s", "raw sqlite3, 100 rows/commit (rows/s)", None, True),
    ("enqueue", "per_s", "enqueue, 1 per call (jobs/s)", None, True),
    ("enqueue", "pct_of_raw", "enqueue, % of raw 1-row loop", 80.0, True),
    ("drain", "with_startup_per_s", "drain incl. start-up (jobs/s)", 9800.0, True),
    ("drain", "steady_per_s", "drain steady (jobs/s)", 10000.0, True),
    ("drain", "startup_s", "drain: spawn to first claim (s)", None, False),
    ("drain", "peak_rss_mb", "drain: worker peak RSS (MB)", 100.0, False),
    ("latency", "p50_ms", "latency p50 (ms)", 2.0, False),
    ("latency", "p95_ms", "latency p95 (ms)", 5.0, False),
    ("steps", "sequential_per_s", "steps sequential (steps/s)", None, True),
    ("steps", "sequential_pct_of_raw", "steps sequential, % of raw 1-row loop", 70.0, True),
    ("steps", "concurrent_per_s", "steps concurrent (steps/s)", 20000.0, True),
    ("fanout", "children_per_s", "fan-out (children/s)", 5000.0, True),
]


# --- the workloads (each runs in a child process: ``run.py --child NAME``) --------------


def _app(db: Path) -> Any:
    """The benchmark app module, its ``queue`` bound to ``db``."""
    os.environ["QANAT_BENCH_DB"] = str(db)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import bench_app

    return bench_app


RAW_COLUMNS = (
    "id TEXT PRIMARY KEY, job TEXT NOT NULL, input TEXT NOT NULL, status TEXT NOT NULL, "
    'priority INTEGER NOT NULL, key TEXT, "group" TEXT, parent_id TEXT, '
    "attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL, created_at REAL NOT NULL, "
    "run_at REAL NOT NULL, available_at REAL, deadline REAL, started_at REAL, "
    "completed_at REAL, owner TEXT, output TEXT, error TEXT, reason TEXT, progress TEXT, "
    "pause_requested INTEGER NOT NULL, claims INTEGER NOT NULL"
)


def raw_loop(db: Path, n: int, per_commit: int) -> float:
    """Rows/s of plain sqlite3 (WAL, synchronous=FULL) inserting rows shaped like an
    execution (qanat's 23 columns, text primary key), ``per_commit`` rows a transaction."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"CREATE TABLE executions ({RAW_COLUMNS})")
    sql = f"INSERT INTO executions VALUES ({', '.join('?' * 23)})"
    start = time.perf_counter()
    for i in range(0, n, per_commit):
        at = time.time()
        rows = [
            (f"{i + j:026x}", "noop", "{}", "pending", 0, None, None, None, 1, 3, at, at, at,
             None, None, None, None, None, None, None, None, 0, 0)
            for j in range(per_commit)
        ]  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


async def w_raw(tmp: Path, n: int) -> dict[str, float]:
    return {
        "n": n,
        "one_row_per_s": raw_loop(tmp / "raw1.db", n, 1),
        "hundred_rows_per_s": raw_loop(tmp / "raw100.db", n * 4, 100),
    }


async def w_enqueue(tmp: Path, n: int) -> dict[str, float]:
    """``await job.start()`` one call at a time, each durable before it returns; a short
    raw one-row loop right before it, in the same process, pairs it with the disk's
    fsync speed of the moment."""
    paired = raw_loop(tmp / "raw.db", max(200, n // 5), 1)
    q = _app(tmp / "q.db").queue
    await q.start(worker=False)
    try:
        for _ in range(20):  # warm-up: imports, statement cache
            await q.jobs.noop.start()
        start = time.perf_counter()
        for _ in range(n):
            await q.jobs.noop.start()
        elapsed = time.perf_counter() - start
    finally:
        await q.stop()
    return {"n": n, "per_s": n / elapsed, "paired_raw_per_s": paired}


def _spawn_worker(db: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QANAT_BENCH_DB": str(db)}
    return subprocess.Popen(
        [sys.executable, "-m", "qanat", "worker", "bench_app:queue", *args],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode not in (0, -signal.SIGTERM):
        raise RuntimeError(f"the worker exited with {proc.returncode}: {err.decode()[-2000:]}")


#: Claimable executions, counted on the claim index (cheap, unlike ``queue.stats()``,
#: whose run-time percentile sorts every finished row: ~30 ms at 20,000 rows, which would
#: take CPU from the worker being measured on a 2-core machine).
LEFT = (
    "SELECT count(*) FROM executions WHERE available_at IS NOT NULL "
    "AND status IN ('pending', 'running', 'waiting')"
)


async def w_drain(
    tmp: Path, n: int, worker_args: tuple[str, ...] = (), during: Any = None
) -> dict[str, float]:
    """Pre-enqueue ``n`` no-op jobs, then one ``qanat worker`` process drains them
    (started with ``worker_args``; ``during(proc)``, if given, runs as a task meanwhile:
    benchmarks/metrics.py scrapes ``/metrics`` with it)."""
    db = tmp / "q.db"
    q = _app(db).queue
    await q.start(worker=False)
    try:
        for i in range(0, n, DRAIN_CHUNK):
            await q.jobs.noop.start_many([{}] * min(DRAIN_CHUNK, n - i))
    finally:
        await q.stop()
    watch = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    spawned = time.time()
    proc = _spawn_worker(db, *worker_args)
    side = None if during is None else asyncio.get_running_loop().create_task(during(proc))
    try:
        while watch.execute(LEFT).fetchone()[0] > 0:
            if proc.poll() is not None:
                raise RuntimeError("the worker exited before the drain finished")
            await asyncio.sleep(POLL)
        rss = _peak_rss_mb(proc.pid)
    finally:
        if side is not None:
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)  # it ends before the worker
        _stop_worker(proc)
    first, last, done = watch.execute(
        "SELECT min(started_at), max(completed_at), count(*) FROM executions "
        "WHERE status = 'completed'"
    ).fetchone()
    watch.close()
    assert done == n, f"{done} of {n} completed"
    return {
        "n": n,
        "with_startup_per_s": n / (last - spawned),
        "steady_per_s": n / (last - first),
        "startup_s": first - spawned,
        "peak_rss_mb": rss,
    }


def _pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[max(0, math.ceil(p * len(sorted_ms)) - 1)]


async def w_latency(tmp: Path, n: int) -> dict[str, float]:
    """Enqueue, then await ``result()``, one at a time; the worker is another process."""
    db = tmp / "q.db"
    q = _app(db).queue
    await q.start(worker=False)
    proc = _spawn_worker(db)
    try:
        for _ in range(LATENCY_WARMUP):  # also waits for the worker to be up
            await (await q.jobs.noop.start()).result(timeout=60)
        times: list[float] = []
        for _ in range(n):
            t = time.perf_counter()
            await (await q.jobs.noop.start()).result(timeout=60)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        _stop_worker(proc)
        await q.stop()
    times.sort()
    return {
        "n": n,
        "p50_ms": statistics.median(times),
        "p95_ms": _pct(times, 0.95),
        "p99_ms": _pct(times, 0.99),
        "mean_ms": statistics.fmean(times),
    }


async def w_steps(tmp: Path, n: int) -> dict[str, float]:
    """``n`` executions of 10 checkpointed no-op steps, in-process worker: one after
    another, then (on a fresh database) all ``n`` started at once."""
    app = _app(tmp / "seq.db")
    async with app.queue as q:
        await q.jobs.ten_steps.run()  # warm-up
        t = time.perf_counter()
        for _ in range(n):
            await q.jobs.ten_steps.run()
        seq = n * 10 / (time.perf_counter() - t)
    paired = raw_loop(tmp / "raw.db", 1000, 1)
    async with app.make_queue(tmp / "conc.db") as q:
        await q.jobs.ten_steps.run()  # warm-up
        t = time.perf_counter()
        await asyncio.gather(*[q.jobs.ten_steps.run() for _ in range(n)])
        conc = n * 10 / (time.perf_counter() - t)
    return {
        "n": n,
        "sequential_per_s": seq,
        "concurrent_per_s": conc,
        "paired_raw_per_s": paired,
    }


async def w_fanout(tmp: Path, n: int) -> dict[str, float]:
    """One parent job starts ``n`` children at once and awaits them all."""
    async with _app(tmp / "q.db").queue as q:
        await q.jobs.fan_out.run(n=10)  # warm-up
        t = time.perf_counter()
        done = await q.jobs.fan_out.run(n=n)
        elapsed = time.perf_counter() - t
    assert done == n, done
    return {"n": n, "children_per_s": n / elapsed}


CHILDREN: dict[str, Callable[[Path, int], Awaitable[dict[str, float]]]] = {
    "raw": w_raw,
    "enqueue": w_enqueue,
    "drain": w_drain,
    "latency": w_latency,
    "steps": w_steps,
    "fanout": w_fanout,
}


# --- the suite ----------------------------------------------------------------------------


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_quiet(limit: float = QUIET_WAIT) -> float:
    """Wait (up to ``limit`` seconds) until other processes use less than ``QUIET_CORES``
    of a core, so a neighbour's test run does not land in a measurement; returns the
    seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        b = _busy_s()
        time.sleep(0.5)
        if (_busy_s() - b) / 0.5 < QUIET_CORES:
            break
    return time.perf_counter() - start


def run_child(name: str, n: int, quiet_wait: float = QUIET_WAIT) -> dict[str, float]:
    """One run of a workload in a fresh process on a fresh temporary folder.

    Adds ``other_cpu_s``: CPU the rest of the machine used meanwhile (busy time from
    /proc/stat minus this run's own processes, so kernel I/O threads count too), which
    flags a run that a neighbour disturbed.
    """
    wait_quiet(quiet_wait)
    busy, own = _busy_s(), _children_cpu_s()
    with tempfile.TemporaryDirectory(prefix=f"qanat-bench-{name}-") as tmp:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", name, "--n", str(n),
             "--dir", tmp],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
    foreign = (_busy_s() - busy) - (_children_cpu_s() - own)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {name} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["other_cpu_s"] = max(0.0, foreign)
    return result


def derive(results: dict[str, Any]) -> None:
    """Ratios to the raw loop: to the suite's raw median, and to the paired loop."""
    raw = results.get("raw", {}).get("one_row_per_s")
    enq = results.get("enqueue")
    if enq:
        enq["pct_of_paired_raw"] = 100 * enq["per_s"] / enq["paired_raw_per_s"]
        if raw:
            enq["pct_of_raw"] = 100 * enq["per_s"] / raw
    steps = results.get("steps")
    if steps:
        steps["sequential_pct_of_paired_raw"] = (
            100 * steps["sequential_per_s"] / steps["paired_raw_per_s"]
        )
        if raw:
            steps["sequential_pct_of_raw"] = 100 * steps["sequential_per_s"] / raw


def table(results: dict[str, Any]) -> str:
    rows = [("metric", "value", "target", "met")]
    for workload, metric, label, target, higher in TARGETS:
        value = results.get(workload, {}).get(metric)
        if value is None:
            continue
        if target is None:
            tgt, met = "", ""
        else:
            tgt = f"{'>=' if higher else '<='} {target:g}"
            met = "yes" if (value >= target if higher else value <= target) else "NO"
        rows.append((label, f"{value:,.1f}" if value < 100 else f"{value:,.0f}", tgt, met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}{' (src modified)' if dirty else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="qanat benchmarks", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, help="workloads to run")
    parser.add_argument("--runs", type=int, default=None, help="runs per workload (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        out = asyncio.run(CHILDREN[args.child](Path(args.dir), args.n))
        print(json.dumps(out))
        return

    sizes = QUICK if args.quick else SIZES
    runs = args.runs or (1 if args.quick else 3)
    quiet = 1.0 if args.quick else QUIET_WAIT
    chosen = [w for w in WORKLOADS if not args.only or w in args.only]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
        },
        "qanat": _git_rev(),
        "qanat_source": str(Path(importlib.util.find_spec("qanat").origin or "?").parent),
        "runs": runs,
        "sizes": {w: sizes[w] for w in chosen},
        "all_runs": {},
    }
    suite_start = time.perf_counter()
    for name in chosen:
        t = time.perf_counter()
        each = [run_child(name, sizes[name], quiet) for _ in range(runs)]
        results["all_runs"][name] = each
        results[name] = {k: statistics.median(r[k] for r in each) for k in each[0]}
        shown = ", ".join(f"{k}={v:,.2f}" for k, v in results[name].items() if k != "n")
        print(f"{name:8} ({time.perf_counter() - t:5.1f}s)  {shown}", flush=True)
    results["seconds"] = time.perf_counter() - suite_start
    derive(results)
    print()
    print(table(results))
    OUT.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2)
    (OUT / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    (OUT / "results.json").write_text(text)
    print(f"\n{results['seconds']:.0f}s; written to {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
