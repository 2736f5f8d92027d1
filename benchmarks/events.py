"""Events sent per second on SQLite (synchronous=FULL), each triggering one job.

    python benchmarks/events.py [--events N]

Each ``send`` records the event and enqueues the triggered execution in one
transaction. Measured one send at a time (each durable before the next) and with
1,000 sends in flight at once (group commit shares the fsync).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from qanat import Pipe, Queue, job

clicks = Pipe("clicks")


@job(triggers=[clicks.into(lambda e: {"n": e["n"]})])
async def count_click(n: int) -> int:
    return n


async def measure(db: Path, n: int, in_flight: int) -> float:
    q = Queue(jobs=[count_click], pipes=[clicks], storage=f"sqlite:///{db}")
    await q.start(worker=False)
    try:
        start = time.perf_counter()
        for i in range(0, n, in_flight):
            batch = range(i, min(n, i + in_flight))
            await asyncio.gather(*[q.pipes.clicks.send({"n": k}) for k in batch])
        elapsed = time.perf_counter() - start
        stats = await q.stats()
        assert stats["by_job"]["count_click"]["pending"] == n, stats
    finally:
        await q.stop()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qanat-events-") as tmp:
        seq = asyncio.run(measure(Path(tmp) / "a.db", args.events, 1))
        conc = asyncio.run(measure(Path(tmp) / "b.db", args.events, 1000))
    print(f"events sent, one at a time:   {seq:,.0f}/s (each triggers one execution)")
    print(f"events sent, 1,000 in flight: {conc:,.0f}/s (each triggers one execution)")


if __name__ == "__main__":
    main()
