"""A large payload costs a real worker about twice its size to read, not ten or twelve.

The worker's peak RSS (``VmHWM``) is read when it is ready and again once it has run
one execution with a 24 MB input. Measured (benchmarks/RESULTS.md, "Payload tables"):
3.1x for an input the job reads, 5.1x when the job also returns it as its output (with
50 MB: 2.1x and 5.1x; before the payload tables 5.2x and 8.2x, before the codec work
8.2x and 12.2x). What remains: the input's text and its decoded value (2x), and for
``echo`` the output's text plus the copy SQLite takes of a bound parameter. The bounds
below leave ~1.3x of slack.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qanat import Queue

if TYPE_CHECKING:
    from conftest import Project

MB = 1024 * 1024
PAYLOAD_MB = 24

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
    jobs=[ingest, echo], storage="sqlite:///" + os.environ["QANAT_TEST_DB"], max_payload="64MB"
)
"""


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("job", "bound"), [("ingest", 4.0), ("echo", 6.5)])
def test_worker_memory_stays_a_few_times_the_payload(
    project: Project, job: str, bound: float
) -> None:
    (project.root / "big.py").write_text(APP)
    app = project.load(project.root / "big.py", f"qanat_big_app_{job}")
    worker = project.worker(app="big:queue")
    idle = _peak_rss_mb(worker.pid)

    async def enqueue() -> None:
        q = Queue(jobs=list(app.queue.jobs), storage=f"sqlite:///{project.db}", max_payload="64MB")
        await q.start(worker=False)
        try:
            await q.jobs[job].start(blob="x" * (PAYLOAD_MB * MB))
        finally:
            await q.stop()

    asyncio.run(enqueue())

    def status() -> str | None:
        with sqlite3.connect(project.db) as conn:
            row = conn.execute("SELECT status FROM executions").fetchone()
        return None if row is None or row[0] not in ("completed", "failed") else str(row[0])

    assert project.wait_until(status, timeout=90, what="the execution finished") == "completed"
    growth = (_peak_rss_mb(worker.pid) - idle) / PAYLOAD_MB
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert growth <= bound, f"the worker grew {growth:.1f}x the payload (bound {bound}x)"
