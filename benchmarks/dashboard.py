"""Dashboard page times over a large SQLite store (issue 11, performance).

    python benchmarks/dashboard.py [--rows 200000] [--steps 1000] [--repeat 15]

Bulk-inserts ``--rows`` executions (5 jobs, every status, groups, realistic inputs,
created over the past week) straight into a migrated qanat SQLite file with one
``executemany`` per 20,000 rows, plus one execution with ``--steps`` steps and 200 log
lines. Then times the dashboard's pages through its ASGI app in this process (routing,
the guard, storage reads, Jinja rendering: everything but the socket), ``--repeat``
times each after one warm-up, and prints median and p95 per page. The targets: the list
and a filtered list under 100 ms, an execution with 1,000 steps under 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from qanat import Queue, job, run
from qanat.dashboard import dashboard_app
from qanat.storage import SqliteStorage

JOBS = ["ingest", "resize", "notify", "report", "sync"]
STATUS_MIX = ["completed"] * 80 + ["failed"] * 8 + ["cancelled"] * 3 + ["pending"] * 5
STATUS_MIX += ["running"] * 2 + ["waiting"] * 1 + ["paused"] * 1
#: The executions columns written here (input and output live in tables of their own).
COLS = (
    'id, job, status, priority, key, "group", parent_id, attempt, max_attempts, '
    "created_at, run_at, available_at, deadline, started_at, completed_at, owner, "
    "error, reason, progress, pause_requested, claims"
)
N_COLS = 21


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Rows in the order (id, job, input, status, ..., owner, output, error, ...)."""
    marks = ", ".join("?" * N_COLS)
    conn.executemany(
        f"INSERT INTO executions ({COLS}) VALUES ({marks})",
        [r[:2] + r[3:17] + r[18:] for r in rows],
    )
    conn.executemany("INSERT INTO inputs (id, input) VALUES (?, ?)", [(r[0], r[2]) for r in rows])
    conn.executemany(
        "INSERT INTO outputs (id, output) VALUES (?, ?)",
        [(r[0], r[17]) for r in rows if r[17] is not None],
    )


@job
async def big(n: int) -> int:
    for i in range(n):
        await run("fetch", lambda i=i: i)
    await run("store", lambda: n)
    return n


def populate(path: Path, rows: int, steps: int) -> tuple[str, str]:
    """Fill the file; returns (the id of the execution with many steps, a mid-range id)."""
    asyncio.run(_migrate(path))
    rnd = random.Random(42)
    now = time.time()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    batch: list[tuple[Any, ...]] = []
    mid = ""
    for i in range(rows):
        created = now - 7 * 86400 + i * (7 * 86400 / rows)
        status = rnd.choice(STATUS_MIX)
        finished = status in ("completed", "failed", "cancelled")
        started = created + rnd.random() if status != "pending" else None
        done = (started or created) + rnd.random() * 5 if finished else None
        eid = f"{int(created * 1e6):016x}{i:08x}"
        if i == rows // 2:
            mid = eid
        error = (
            json.dumps({"type": "RuntimeError", "message": f"boom {i}", "traceback": "Traceback…"})
            if status == "failed"
            else None
        )
        batch.append(
            (
                eid,
                JOBS[i % 5],
                json.dumps({"user": f"user-{i % 977}", "item": i, "note": "x" * 40}),
                status,
                0,
                None,
                f"run-{i // 100}" if i % 3 == 0 else None,
                None,
                1,
                3,
                created,
                created,
                None if finished else created,
                None,
                started,
                done,
                None,
                json.dumps({"ok": i}) if status == "completed" else None,
                error,
                None,
                None,
                0,
                1 if started else 0,
            )
        )
        if len(batch) == 20_000:
            _insert(conn, batch)
            batch.clear()
    if batch:
        _insert(conn, batch)
    big_id = "ffffffffffffffffbig00001"
    t0 = now - 60
    _insert(
        conn,
        [
            (
                big_id,
                "big",
                json.dumps({"n": steps}),
                "completed",
                0,
                None,
                None,
                None,
                1,
                3,
                t0,
                t0,
                None,
                None,
                t0,
                t0 + steps * 0.01 + 0.1,
                None,
                str(steps),
                None,
                None,
                None,
                0,
                1,
            )
        ],
    )
    conn.executemany(
        "INSERT INTO steps (execution_id, key, kind, name, status, result, error, attempts, "
        "job_attempt, started_at, finished_at) "
        "VALUES (?, ?, 'run', ?, 'completed', ?, NULL, 1, 1, ?, ?)",
        [
            (
                big_id,
                "fetch" if k == 0 else f"fetch#{k + 1}",
                "fetch",
                str(k),
                t0 + k * 0.01,
                t0 + k * 0.01 + 0.008,
            )
            for k in range(steps)
        ]
        + [(big_id, "store", "store", str(steps), t0 + steps * 0.01, t0 + steps * 0.01 + 0.05)],
    )
    conn.executemany(
        "INSERT INTO logs (execution_id, at, message, fields, step) VALUES (?, ?, ?, ?, NULL)",
        [(big_id, t0 + k, f"line {k}", json.dumps({"k": k})) for k in range(200)],
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return big_id, mid


async def _migrate(path: Path) -> None:
    s = SqliteStorage(str(path))
    await s.open()
    await s.close()


async def measure(path: Path, big_id: str, mid: str, repeat: int) -> dict[str, list[float]]:
    q = Queue(jobs=[big], storage=f"sqlite:///{path}")
    await q.start(worker=False)
    app = dashboard_app(q)
    out: dict[str, list[float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        first = await c.get("/")
        cursor = first.text.split("after=")[1].split('"')[0].replace("&amp;", "&")
        pages = {
            "list (newest 50)": "/",
            "list, page 2 (keyset cursor)": f"/?after={cursor}",
            "filter job=resize": "/?job=resize",
            "filter status=failed": "/?status=failed",
            "filter job=report status=paused": "/?job=report&status=paused",
            "filter group=run-1000": "/?group=run-1000",
            "filter started in a 1 h range": "/?started_after="
            + _iso(time.time() - 3 * 86400)
            + "&started_before="
            + _iso(time.time() - 3 * 86400 + 3600),
            "search by id (answered by a redirect)": f"/?search={mid}",
            "search input text, common (user-5)": "/?search=user-5",
            "search input text, rare (a 200k scan)": "/?search=%22item%22:%2012345,",
            f"execution with {len(await q.storage.steps(big_id))} steps": f"/executions/{big_id}",
            "jobs (counts by status)": "/jobs",
            "bulk confirm: retry status=failed (count)": (
                "/executions/bulk?action=retry&status=failed"
            ),
        }
        for name, url in pages.items():
            r = await c.get(url)
            assert r.status_code in (200, 303), (url, r.status_code, r.text[:300])
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = await c.get(url)
                times.append((time.perf_counter() - t) * 1000)
            out[name] = times
    await q.stop()
    return out


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dash.db"
        t = time.perf_counter()
        big_id, mid = populate(path, args.rows, args.steps)
        print(
            f"inserted {args.rows:,} executions + 1 with {args.steps} steps "
            f"in {time.perf_counter() - t:.1f}s "
            f"({os.path.getsize(path) / 1e6:.0f} MB)"
        )
        res = asyncio.run(measure(path, big_id, mid, args.repeat))
    print(f"{'page':<48} {'median ms':>10} {'p95 ms':>8}")
    for name, times in res.items():
        times.sort()
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        print(f"{name:<48} {statistics.median(times):>10.1f} {p95:>8.1f}")
    print(
        f"load: {os.getloadavg()}, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}"
    )


if __name__ == "__main__":
    main()
