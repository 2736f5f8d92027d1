"""Memory an execution with a large payload costs: the peak RSS of a real worker.

    python benchmarks/payloads.py [--mb 50] [--runs 1]

For each shape (an input read by the job, whose output is small: ``ingest``; an input
returned as the output: ``echo``), a fresh SQLite file and a ``qanat worker``
subprocess: its peak RSS (``VmHWM``) is read once it is ready, then once the one
execution, enqueued by a client subprocess, has completed. The figure is the growth
over the idle worker, as a multiple of the payload's size. The client's own peak RSS
(enqueueing the payload) is reported too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024

APP = """
import os
import qanat
from qanat import job

@job
async def ingest(blob: str) -> int:
    return len(blob)

@job
async def echo(blob: str) -> str:
    return blob

queue = qanat.Queue(
    jobs=[ingest, echo], storage="sqlite:///" + os.environ["QANAT_DB"], max_payload="1GB"
)
"""

CLIENT = """
import asyncio, resource, sys
from app import queue

async def main():
    await queue.start(worker=False)
    await queue.jobs[sys.argv[1]].start(blob="x" * (int(sys.argv[2]) * 1024 * 1024))
    await queue.stop()

asyncio.run(main())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def vm_hwm(pid: int) -> float:
    """Peak resident set size of a live process, in MB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def wait_for(pred: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.05)


def measure(job: str, mb: int) -> dict[str, float]:
    """One worker, one execution of ``job`` with an ``mb`` MB input."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "app.py").write_text(APP)
        db = root / "q.db"
        path = str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "QANAT_DB": str(db), "PYTHONPATH": path}
        err = root / "worker.err"
        with err.open("wb") as fe:
            worker = subprocess.Popen(
                [sys.executable, "-m", "qanat", "worker", "app:queue", "--concurrency", "1"],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=fe,
            )
        try:
            wait_for(lambda: " running jobs: " in err.read_text(), 30, "worker start")
            idle = vm_hwm(worker.pid)
            client = subprocess.run(
                [sys.executable, "-c", CLIENT, job, str(mb)],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )

            def done() -> bool:
                with sqlite3.connect(db) as conn:
                    row = conn.execute("SELECT status FROM executions").fetchone()
                if row is not None and row[0] == "failed":
                    raise RuntimeError("the execution failed")
                return row is not None and row[0] == "completed"

            wait_for(done, 120, "completion")
            peak = vm_hwm(worker.pid)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    return {
        "idle_mb": idle,
        "peak_mb": peak,
        "growth_x": (peak - idle) / mb,
        "client_mb": float(client.stdout.strip()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=50, help="payload size in MB")
    args = ap.parse_args()
    print(f"payload {args.mb} MB; worker peak RSS (VmHWM), growth over the idle worker")
    for job in ("ingest", "echo"):
        r = measure(job, args.mb)
        print(
            f"  {job:7} idle {r['idle_mb']:6.1f} MB  peak {r['peak_mb']:6.1f} MB  "
            f"growth {r['growth_x']:4.1f}x payload   client peak {r['client_mb']:6.1f} MB"
        )


if __name__ == "__main__":
    main()
