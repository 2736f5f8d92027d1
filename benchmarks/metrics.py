"""What metrics cost the hot path: the drain workload of run.py (SQLite, synchronous=FULL,
``qanat worker`` process) with ``--metrics-port`` off and on, alternated in one run.

    python benchmarks/metrics.py [--n 20000] [--pairs 3] [--scrape 5.0]

"on" is a worker with ``--metrics-port P`` scraped every ``--scrape`` seconds while it
drains (Prometheus' default is 15 s: this is harsher; each scrape that misses the 2 s
cache reads ``queue.stats()``). Runs alternate off, on, off, on... on fresh databases so
drift on a shared machine hits both alike; the figure that matters is the ratio of the
medians (target: on >= 90 % of off). Prints a table and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as suite  # noqa: E402 - benchmarks/run.py, the drain workload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scraper(port: int, every: float, seen: list[int]) -> None:
    """Scrape /metrics every ``every`` seconds (in a thread: urllib blocks)."""
    url = f"http://127.0.0.1:{port}/metrics"

    def get() -> int:
        with urllib.request.urlopen(url, timeout=5) as res:
            return len(res.read())

    while True:
        await asyncio.sleep(every)
        try:
            seen.append(await asyncio.to_thread(get))
        except OSError:
            pass  # not listening yet


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain(n: int, metrics: bool, every: float) -> dict[str, Any]:
    """One drain of ``n`` no-op jobs; adds the worker's CPU per job, read when the drain
    is over (less sensitive to the neighbours than wall-clock throughput)."""
    sys.modules.pop("bench_app", None)  # run.py binds its queue to the db at import
    port = free_port()
    seen: list[int] = []
    cpu: list[float] = []

    async def during(proc: Any) -> None:
        try:
            if metrics:
                await scraper(port, every, seen)
            else:
                await asyncio.Event().wait()
        finally:  # cancelled once the drain is over, before the worker is stopped
            cpu.append(cpu_s(proc.pid))

    args = ("--metrics-port", str(port)) if metrics else ()
    with tempfile.TemporaryDirectory(prefix="qanat-bench-metrics-") as tmp:
        out = await suite.w_drain(Path(tmp), n, args, during)
    out["scrapes"] = len(seen)
    out["cpu_us_per_job"] = cpu[0] / n * 1e6 if cpu else float("nan")
    return out


async def in_process(tmp: Path, n: int, metrics: bool) -> float:
    """CPU microseconds per execution of ``ten_steps`` (ten checkpointed steps) run by
    an in-process worker: the engine's hot path, without a process start-up."""
    sys.modules.pop("bench_app", None)
    import bench_app

    from qanat.observability.metrics import enable

    q = bench_app.make_queue(tmp / f"inproc-{metrics}-{time.monotonic_ns()}.db")
    if metrics:
        enable(q)
    async with q:
        await q.jobs.ten_steps.run()  # warm-up
        cpu = time.process_time()
        await asyncio.gather(*[q.jobs.ten_steps.run() for _ in range(n)])
        return (time.process_time() - cpu) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--scrape", type=float, default=5.0)
    args = ap.parse_args()
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    load0 = os.getloadavg()
    for _ in range(args.pairs):
        for metrics in (False, True):
            suite.wait_quiet()
            got = asyncio.run(drain(args.n, metrics, args.scrape))
            runs[metrics].append(got)
            print(
                f"metrics {'on ' if metrics else 'off'}: steady {got['steady_per_s']:8.0f}/s, "
                f"with start-up {got['with_startup_per_s']:8.0f}/s, "
                f"worker CPU {got['cpu_us_per_job']:6.1f} us/job"
                + (f", {got['scrapes']} scrapes" if metrics else ""),
                flush=True,
            )
    hot: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="qanat-bench-metrics-") as tmp:
        for _ in range(args.pairs * 2):
            for metrics in (False, True):
                hot[metrics].append(asyncio.run(in_process(Path(tmp), 500, metrics)))
    print(f"\nload average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'drain, ' + str(args.n) + ' no-op jobs':<34} {'off':>9} {'on':>9} {'on/off':>7}")
    for key, label in (
        ("steady_per_s", "steady (jobs/s)"),
        ("with_startup_per_s", "incl. start-up (jobs/s)"),
    ):
        off = statistics.median(r[key] for r in runs[False])
        on = statistics.median(r[key] for r in runs[True])
        print(f"{label:<34} {off:9.0f} {on:9.0f} {on / off:7.1%}")
    off = statistics.median(r["cpu_us_per_job"] for r in runs[False])
    on = statistics.median(r["cpu_us_per_job"] for r in runs[True])
    print(f"{'worker CPU per job (us)':<34} {off:9.1f} {on:9.1f} {on / off:7.1%}")
    off, on = statistics.median(hot[False]), statistics.median(hot[True])
    print(f"{'in-process ten_steps, CPU/exec (us)':<34} {off:9.1f} {on:9.1f} {on / off:7.1%}")
    rss_off = statistics.median(r["peak_rss_mb"] for r in runs[False])
    rss_on = statistics.median(r["peak_rss_mb"] for r in runs[True])
    print(f"{'worker peak RSS (MB)':<34} {rss_off:9.1f} {rss_on:9.1f}")


if __name__ == "__main__":
    main()
