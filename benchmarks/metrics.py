"""What metrics cost the hot path: the drain workload of run.py (SQLite, synchronous=FULL,
``qanat worker`` process) with ``--metrics-port`` off and on, alternated in one run.

    python benchmarks/metrics.py [--n 20000] [--pairs 3] [--scrape 1.0]

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


async def drain(n: int, metrics: bool, every: float) -> dict[str, Any]:
    sys.modules.pop("bench_app", None)  # run.py binds its queue to the db at import
    with tempfile.TemporaryDirectory(prefix="qanat-bench-metrics-") as tmp:
        if not metrics:
            return await suite.w_drain(Path(tmp), n)
        port = free_port()
        seen: list[int] = []

        async def during(_proc: Any) -> None:
            await scraper(port, every, seen)

        out = await suite.w_drain(Path(tmp), n, ("--metrics-port", str(port)), during)
        out["scrapes"] = len(seen)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--scrape", type=float, default=1.0)
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
                f"with start-up {got['with_startup_per_s']:8.0f}/s"
                + (f", {got['scrapes']} scrapes" if metrics else ""),
                flush=True,
            )
    print(f"\nload average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'drain, ' + str(args.n) + ' no-op jobs':<34} {'off':>9} {'on':>9} {'on/off':>7}")
    for key, label in (
        ("steady_per_s", "steady (jobs/s)"),
        ("with_startup_per_s", "incl. start-up (jobs/s)"),
    ):
        off = statistics.median(r[key] for r in runs[False])
        on = statistics.median(r[key] for r in runs[True])
        print(f"{label:<34} {off:9.0f} {on:9.0f} {on / off:7.1%}")
    rss_off = statistics.median(r["peak_rss_mb"] for r in runs[False])
    rss_on = statistics.median(r["peak_rss_mb"] for r in runs[True])
    print(f"{'worker peak RSS (MB)':<34} {rss_off:9.1f} {rss_on:9.1f}")


if __name__ == "__main__":
    main()
