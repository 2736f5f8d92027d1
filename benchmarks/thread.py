"""``thread`` steps: parallel CPU work in child processes, and the cost of one step.

    python benchmarks/thread.py [--seconds 1.0] [--steps 200] [--repeat 3]

1. Two CPU-bound steps of ~``--seconds`` each started at once (``asyncio.gather``), as
   ``thread`` steps (two child processes: on a 2-core machine they should take about
   the time of one) and as ``run`` steps (plain functions in the worker's threads,
   which share its GIL: about the time of two).
2. An empty step with a warm pool, ``--steps`` of them one after another in one
   execution, as ``thread`` and as ``run``: the difference is what crossing into a
   child process costs (target <= 5 ms).

SQLite storage (synchronous=FULL) in a temporary directory, an in-process worker with
``Queue(threads=2)``. The figures are those of the quietest of ``--repeat`` rounds
(the one in which other processes used the least CPU; shown).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from qanat import Queue, job, run, thread


def burn(n: int) -> int:
    """Pure-Python CPU work: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def nothing() -> None:
    return None


def calibrate(seconds: float) -> int:
    """The ``n`` for which ``burn(n)`` takes about ``seconds`` here."""
    n = 200_000
    while True:
        start = time.perf_counter()
        burn(n)
        took = time.perf_counter() - start
        if took > 0.2:
            return int(n * seconds / took)
        n *= 2


@job
async def two_threads(n: int) -> list[int]:
    return list(await asyncio.gather(thread("a", burn, n), thread("b", burn, n)))


@job
async def two_runs(n: int) -> list[int]:
    return list(await asyncio.gather(run("a", burn, n), run("b", burn, n)))


@job
async def one_thread(n: int) -> int:
    return int(await thread("a", burn, n))


@job
async def empty_threads(steps: int) -> int:
    for _ in range(steps):
        await thread("empty", nothing)
    return steps


@job
async def empty_runs(steps: int) -> int:
    for _ in range(steps):
        await run("empty", nothing)
    return steps


async def timed(q: Queue, name: str, arg: int) -> float:
    start = time.perf_counter()
    await q.jobs[name].run(arg)
    return time.perf_counter() - start


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s(q: Queue) -> float:
    """CPU seconds of this process and of the worker's thread children so far."""
    t = os.times()
    total = t.user + t.system
    pids = q.worker.process_pool().pids() if q.worker is not None else []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def measure(db: Path, n: int, steps: int, repeat: int) -> dict[str, float]:
    """The quietest of ``repeat`` rounds: the one in which the rest of the machine used
    the least CPU (``other_cpu_s``: busy time from /proc/stat minus this process and
    its thread children)."""
    jobs = [two_threads, two_runs, one_thread, empty_threads, empty_runs]
    q = Queue(jobs=jobs, storage=f"sqlite:///{db}", threads=2)
    await q.start()
    try:
        await timed(q, "two_threads", 1)  # warm-up: starts both children
        await timed(q, "empty_runs", 10)
        rounds = []
        for _ in range(repeat):
            busy, own = _busy_s(), _own_cpu_s(q)
            r = {
                "one_thread": await timed(q, "one_thread", n),
                "two_threads": await timed(q, "two_threads", n),
                "two_runs": await timed(q, "two_runs", n),
                "empty_thread": await timed(q, "empty_threads", steps) / steps,
                "empty_run": await timed(q, "empty_runs", steps) / steps,
            }
            r["other_cpu_s"] = max(0.0, (_busy_s() - busy) - (_own_cpu_s(q) - own))
            rounds.append(r)
    finally:
        await q.stop()
    return min(rounds, key=lambda r: r["other_cpu_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the quietest is shown")
    args = parser.parse_args()
    load = os.getloadavg()
    n = calibrate(args.seconds)
    with tempfile.TemporaryDirectory(prefix="qanat-thread-") as tmp:
        r = asyncio.run(measure(Path(tmp) / "t.db", n, args.steps, args.repeat))
    load = ", ".join(f"{x:.1f}" for x in load)
    print(
        f"cores: {os.cpu_count()}, load average before: {load}; quietest of {args.repeat} "
        f"rounds: other processes used {r['other_cpu_s']:.1f} CPU-s during it"
    )
    print(f"one CPU step as thread:      {r['one_thread']:.2f} s")
    print(
        f"two at once as thread:       {r['two_threads']:.2f} s "
        f"({r['two_threads'] / r['one_thread']:.2f}x one)"
    )
    print(
        f"two at once as run:          {r['two_runs']:.2f} s "
        f"({r['two_runs'] / r['one_thread']:.2f}x one; thread is "
        f"{r['two_runs'] / r['two_threads']:.2f}x faster)"
    )
    print(f"empty thread step (warm):    {r['empty_thread'] * 1000:.2f} ms")
    print(f"empty run step:              {r['empty_run'] * 1000:.2f} ms")
    print(f"thread overhead per step:    {(r['empty_thread'] - r['empty_run']) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
