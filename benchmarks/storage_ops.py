"""CPU cost of the storage's hot operations, per call: less sensitive to a busy machine
than the wall-clock figures of ``run.py`` (other processes' load hardly changes the CPU
time a call takes), so two versions can be compared on a shared box.

    python benchmarks/storage_ops.py [--n 2000] [--runs 5] [--input-bytes 200]

On a fresh SQLite file (the default ``synchronous``): ``n`` enqueues of one execution
each, then claims of 10 and finishes of each claimed execution one by one. Reports the
median over ``runs`` of the process CPU time (all threads: the writer thread does the
SQL) per call, in microseconds. To compare two trees, run it with ``PYTHONPATH=<tree>/src``
for each, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from qanat.storage import SqliteStorage
from qanat.storage.base import ExecutionRecord, Finish


async def once(n: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStorage(str(Path(tmp) / "ops.db"))
        await store.open()
        try:
            body = '{"x": "' + "a" * max(0, size - 9) + '"}'
            recs = [
                ExecutionRecord(id=uuid.uuid4().hex, job="j", input=body, created_at=time.time())
                for _ in range(n)
            ]
            t = time.process_time()
            for r in recs:
                await store.enqueue([r])
            enq = time.process_time() - t
            claims = finishes = 0
            claim_t = finish_t = 0.0
            while True:
                t = time.process_time()
                got = await store.claim("w", ["j"], 10, 30.0, None)
                claim_t += time.process_time() - t
                claims += 1
                if not got:
                    break
                t = time.process_time()
                for g in got:
                    await store.finish(g.id, "w", Finish("completed", output='{"ok": 1}'))
                finish_t += time.process_time() - t
                finishes += len(got)
        finally:
            await store.close()
    return {
        "enqueue_us": enq / n * 1e6,
        "claim10_us": claim_t / claims * 1e6,
        "finish_us": finish_t / max(finishes, 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--input-bytes", type=int, default=200)
    args = parser.parse_args()
    runs = [asyncio.run(once(args.n, args.input_bytes)) for _ in range(args.runs)]
    for key in runs[0]:
        vals = sorted(r[key] for r in runs)
        print(f"{key:12s} median {statistics.median(vals):8.1f}  (min {vals[0]:.1f})")


if __name__ == "__main__":
    main()
