"""Benchmark of stopping a worker that holds many executions inside a step (SQLite,
synchronous=FULL).

    python benchmarks/stop.py [--executions 100] [--step 1.0] [--runs 3] [--only MODE]

Each execution of job ``three`` runs three steps of ``--step`` seconds (``asyncio.sleep``)
and logs when each step starts and ends. ``--executions`` (100) are enqueued; once all are
inside their first step the worker is stopped:

in-process
    ``await queue.stop(grace=30)`` in the process running the worker (what leaving
    ``async with queue`` does), timed from the call to its return (storage closed).
process
    a ``qanat worker --grace 30`` subprocess gets SIGTERM; timed from the signal to the
    process's exit.

Target: the stop completes within 1 s plus the step in flight (the grace is far longer,
so a stop that let executions run on through their later steps would show it). Reported
per mode (medians over ``--runs`` fresh databases): the stop's duration, the longest
time the steps in flight still had to run when the stop began, the stop's own cost
(duration minus that), how many executions were released (``pending``, one step
checkpointed) and completed, and how many steps started after the stop began. Then a
second worker runs the released executions to the end; the benchmark checks that no
step that had completed ran again (``rerun`` must be 0).

Run it against another tree with ``PYTHONPATH=<tree>/src`` (the worker subprocess
inherits it), e.g. main before stopping at step boundaries, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

APP = r"""
import asyncio
import os
import time

import qanat
from qanat import Context, job, run

LOG = os.environ["BENCH_LOG"]
STEP = float(os.environ["BENCH_STEP"])


def note(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def part(eid, i):
    note(f"{eid} {i} start {time.time()!r}")
    await asyncio.sleep(STEP)
    note(f"{eid} {i} end {time.time()!r}")
    return i


@job
async def three(ctx: Context) -> int:
    total = 0
    for i in range(3):
        total += await run(f"s{i}", part, ctx.execution_id, i)
    return total


queue = qanat.Queue(
    jobs=[three], storage="sqlite:///" + os.environ["BENCH_DB"], concurrency=1000
)
"""

MODES = ("in-process", "process")


def _load(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_stop_{folder.name}", folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(folder: Path) -> list[tuple[str, int, str, float]]:
    p = folder / "steps.log"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        eid, i, what, at = line.split()
        out.append((eid, int(i), what, float(at)))
    return out


def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise RuntimeError(f"{what} not reached within {timeout}s")
        time.sleep(0.01)


async def _statuses(app: ModuleType, ids: list[str]) -> tuple[Counter[str], Counter[str]]:
    q = app.qanat.Queue(jobs=[app.three], storage=app.queue.storage)
    await q.start(worker=False)
    try:
        recs = await q.storage.get_many(ids)
        steps = Counter[str]()
        for r in recs:
            if r.status == "pending":
                steps[str(len(await q.storage.steps(r.id)))] += 1
        return Counter(r.status for r in recs), steps
    finally:
        await q.stop()


async def _enqueue(app: ModuleType, n: int) -> list[str]:
    q = app.qanat.Queue(jobs=[app.three], storage=app.queue.storage)
    await q.start(worker=False)
    try:
        return [e.id for e in await q.jobs.three.start_many([{}] * n)]
    finally:
        await q.stop()


async def _in_process(app: ModuleType, folder: Path, n: int) -> float:
    q = app.queue
    await q.start()
    _ = await q.jobs.three.start_many([{}] * n)
    end = time.monotonic() + 60
    while sum(1 for e in _log(folder) if e[1] == 0 and e[2] == "start") < n:
        if time.monotonic() > end:
            raise RuntimeError("the executions never all started")
        await asyncio.sleep(0.01)
    t0 = time.time()
    await q.stop(grace=30)
    return t0


def _process(folder: Path, env: dict[str, str], n: int, app: ModuleType) -> float:
    asyncio.run(_enqueue(app, n))
    err = (folder / "worker.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qanat", "worker", "app:queue", "--grace", "30"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        _wait(
            lambda: sum(1 for e in _log(folder) if e[1] == 0 and e[2] == "start") >= n,
            60,
            "all executions in their first step",
        )
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if code != 0:
            raise RuntimeError(f"worker exited with {code}: {(folder / 'worker.err').read_text()}")
        return t0
    finally:
        if proc.poll() is None:
            proc.kill()
        err.close()


async def _finish(app: ModuleType, ids: list[str]) -> None:
    q = app.qanat.Queue(jobs=[app.three], storage=app.queue.storage)
    await q.start()
    try:
        for i in ids:
            h = await q.executions.get(i)
            assert h is not None
            await h.result(timeout=60)
    finally:
        await q.stop()


def one(mode: str, n: int, step: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qanat-stop-") as d:
        folder = Path(d)
        (folder / "app.py").write_text(APP)
        env = dict(
            os.environ,
            BENCH_DB=str(folder / "q.db"),
            BENCH_LOG=str(folder / "steps.log"),
            BENCH_STEP=repr(step),
        )
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(folder), os.environ.get("PYTHONPATH")) if p
        )
        os.environ.update({k: env[k] for k in ("BENCH_DB", "BENCH_LOG", "BENCH_STEP")})
        app = _load(folder)
        if mode == "in-process":
            t0 = asyncio.run(_in_process(app, folder, n))
        else:
            t0 = _process(folder, env, n, app)
        took = time.time() - t0
        log = _log(folder)
        ids = sorted({e[0] for e in log})
        ends = [at for _, i, what, at in log if i == 0 and what == "end"]
        remaining = max(ends) - t0 if ends else 0.0
        after = sum(1 for _, _, what, at in log if what == "start" and at > t0)
        status, steps = asyncio.run(_statuses(app, ids))
        done_before = {(e, i) for e, i, what, _ in log if what == "end"}
        asyncio.run(_finish(app, ids))
        starts = Counter((e, i) for e, i, what, _ in _log(folder) if what == "start")
        rerun = sum(1 for k in done_before if starts[k] > 1)
        return {
            "stop_s": took,
            "remaining_s": remaining,
            "cost_s": took - remaining,
            "released": status.get("pending", 0),
            "completed": status.get("completed", 0),
            "one_step_checkpointed": steps.get("1", 0),
            "steps_started_after_stop": after,
            "rerun": rerun,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executions", type=int, default=100)
    ap.add_argument("--step", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=MODES, action="append")
    args = ap.parse_args()
    import qanat

    print(
        f"qanat from {Path(qanat.__file__).parent}; {args.executions} executions, step "
        f"{args.step:g}s, {args.runs} runs"
    )
    for mode in args.only or MODES:
        rows = [one(mode, args.executions, args.step) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        target = 1.0 + args.step
        each = ", ".join(f"{r['stop_s']:.3f}" for r in rows)
        print(
            f"{mode:>10}: stop {med['stop_s']:.3f}s (runs {each}), step left at stop "
            f"{med['remaining_s']:.3f}s, stop's own cost {med['cost_s']:.3f}s; "
            f"released {med['released']:g}, completed {med['completed']:g}, "
            f"released with 1 step {med['one_step_checkpointed']:g}, steps started after "
            f"the stop {med['steps_started_after_stop']:g}, completed steps run again "
            f"{max(r['rerun'] for r in rows)}; target <= {target:g}s: "
            f"{'met' if max(r['stop_s'] for r in rows) <= target else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
