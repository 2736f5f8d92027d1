"""Cron across worker processes: every tick runs exactly once, whatever the number of workers."""

from __future__ import annotations

import signal
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from qanat import Queue
from qanat.cron import tick_of
from qanat.storage.base import ExecutionFilter

if TYPE_CHECKING:
    from conftest import Project

CRON_APP = r"""
import os
from datetime import datetime

import qanat
from qanat import job


def append(name, line):
    fd = os.open(os.path.join(os.environ["QANAT_TEST_DIR"], name),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(cron="*/1 * * * * *")
async def beat(scheduled_at: datetime) -> None:
    append("ticks.log", f"{scheduled_at.timestamp()!r} {os.getpid()}")


queue = qanat.Queue(jobs=[beat], storage=os.environ["QANAT_TEST_STORAGE"])
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_two_workers_run_a_six_field_cron_once_per_tick(project: Project) -> None:
    (project.root / "cronapp.py").write_text(CRON_APP)
    w1 = project.worker(app="cronapp:queue")
    w2 = project.worker(app="cronapp:queue")
    both = len(project.lines("ticks.log"))

    # about 5 s with both workers running
    project.wait_until(
        lambda: len(project.lines("ticks.log")) >= both + 5,
        timeout=30,
        what="five more ticks",
        interval=0.1,
    )
    for w in (w1, w2):
        w.signal(signal.SIGTERM)
    for w in (w1, w2):
        assert w.wait(30) == 0, w.stderr()

    runs = Counter(float(line.split()[0]) for line in project.lines("ticks.log"))
    assert max(runs.values()) == 1, [t for t, n in runs.items() if n > 1]

    async def keys(q: Queue) -> list[tuple[str | None, str]]:
        page = await q.storage.query(ExecutionFilter(job=["beat"]), 10_000, None)
        return [(r.key, r.status) for r in page.items]

    stored = project.client(keys)
    per_key = Counter(k for k, _ in stored)
    assert max(per_key.values()) == 1
    ticks = sorted(t for t in (tick_of(k) for k in per_key) if t is not None)
    assert len(ticks) == len(stored) >= 4
    # one execution per tick: no tick skipped between the first and the last
    assert ticks == [ticks[0] + i for i in range(len(ticks))]
    completed = {tick_of(k) for k, status in stored if status == "completed"}
    assert completed == set(runs)
    assert len(completed) >= 5
