"""Benchmarks of ``pipe.wait_for`` on SQLite (synchronous=FULL).

    python benchmarks/waiters.py [--rounds N] [--waiters N] [--sends N]

1. Wake-up latency: a ``qanat worker`` subprocess runs a job that waits on a pipe; this
   process sends the matching event and the job records the time it resumed. Latency is
   that time minus the time just before the send (same host clock); p50/p95 over
   ``--rounds`` waits.
2. Matching cost: ``--waiters`` executions wait on one pipe, each for its own id; then
   ``--sends`` events that match none of them are sent one by one. Printed beside the
   same sends with no waiter at all: with indexed matching the two are close.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

APP = r"""
import os
import time

import qanat
from qanat import Pipe, job

pings = Pipe("pings")


@job
async def waiter(n: int) -> float:
    await pings.wait_for({"n": n}, timeout="1m")
    return time.time()


queue = qanat.Queue(jobs=[waiter], pipes=[pings], storage="sqlite:///" + os.environ["BENCH_DB"])
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _spawn(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Any]:
    err = (folder / "worker.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qanat", "worker", "bench_wait_app:queue"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    return proc, err


async def latency(folder: Path, rounds: int) -> tuple[float, float]:
    import importlib.util

    (folder / "bench_wait_app.py").write_text(APP)
    # keep the caller's PYTHONPATH: the worker must import the same qanat as this process
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, BENCH_DB=str(folder / "lat.db"), PYTHONPATH=path)
    spec = importlib.util.spec_from_file_location("bench_wait_app", folder / "bench_wait_app.py")
    assert spec is not None and spec.loader is not None
    os.environ["BENCH_DB"] = env["BENCH_DB"]
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    q = app.queue
    await q.start(worker=False)
    proc, err = _spawn(folder, env)
    out: list[float] = []
    try:
        for n in range(rounds):
            h = await app.waiter.start(n=n)
            while True:
                rec = await q.storage.get(h.id)
                if rec is not None and rec.status == "waiting" and rec.owner is None:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)  # let the worker settle into its idle wait
            t0 = time.time()
            await app.pings.send({"n": n})
            resumed = await h.result(timeout=30)
            out.append((resumed - t0) * 1000)
    finally:
        proc.terminate()
        proc.wait(10)
        err.close()
        await q.stop()
    return statistics.median(out), pct(out, 95)


async def matching(folder: Path, waiters: int, sends: int) -> tuple[float, float]:
    from qanat.storage import EventRecord, ExecutionRecord, SqliteStorage
    from qanat.storage.base import Waiter, now
    from qanat.storage.matching import shape_and_value

    async def run_sends(store: SqliteStorage, tag: str) -> float:
        t = time.perf_counter()
        for i in range(sends):
            ev = EventRecord(f"{tag}{i}", "p", f'{{"id": "nobody-{i}", "x": {i}}}', now())
            await store.send(ev, [], [])
        return time.perf_counter() - t

    base = SqliteStorage(str(folder / "base.db"))
    await base.open()
    try:
        empty = await run_sends(base, "b")
    finally:
        await base.close()

    store = SqliteStorage(str(folder / "match.db"))
    await store.open()
    try:
        t = now()
        recs = [
            ExecutionRecord(f"e{i}", "j", "{}", created_at=t, run_at=t, available_at=t)
            for i in range(waiters)
        ]
        await store.enqueue(recs)
        await store.claim("w", ["j"], waiters, 60, now())
        for i in range(waiters):
            shape, value = shape_and_value({"id": f"e{i}"})
            w = Waiter(f"e{i}", "wait:p", "p", shape, value, now(), None)
            await store.wait(f"e{i}", "w", w, None, now())
        with_waiters = await run_sends(store, "m")
        assert (await store.waiter("e0", "wait:p")) is not None
    finally:
        await store.close()
    return empty, with_waiters


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--waiters", type=int, default=1000)
    ap.add_argument("--sends", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p50, p95 = await latency(Path(tmp), args.rounds)
        print(
            f"wake-up latency after send (worker subprocess, {args.rounds} waits): "
            f"p50 {p50:.2f} ms, p95 {p95:.2f} ms"
        )
        empty, full = await matching(Path(tmp), args.waiters, args.sends)
        print(
            f"{args.sends} non-matching sends: {empty:.2f} s with no waiter "
            f"({empty / args.sends * 1e6:.0f} us/send), {full:.2f} s with "
            f"{args.waiters} waiters ({full / args.sends * 1e6:.0f} us/send)"
        )


if __name__ == "__main__":
    asyncio.run(main())
