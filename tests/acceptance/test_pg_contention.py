"""Contention on PostgreSQL with real processes: a concurrency limit, an idempotency key
and a cron tick, each fought over by several worker (or client) processes at once.

Every process is a real ``python -m qanat worker`` (or a plain Python client) on the
session's PostgreSQL server, in a fresh schema; what the jobs did is read back from a
file they append to with one O_APPEND write per line, so the checks would fail if a
limit were counted without a lock (two claimers each seeing 2 of 3 slots taken).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from qanat import Queue
from qanat.cron import tick_of
from qanat.storage.base import FINISHED_STATUSES, ExecutionFilter, ExecutionRecord

if TYPE_CHECKING:
    from conftest import Project

CONTENTION_APP = r'''
import asyncio
import os
import time
from datetime import datetime

import qanat
from qanat import Context, job

DIR = os.environ["QANAT_TEST_DIR"]


def append(name, line):
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(os.path.join(DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(concurrency=3)
async def limited(i: int, ctx: Context) -> int:
    start = time.time()
    await asyncio.sleep(0.05)
    end = time.time()
    append("limited.log", f"{ctx.execution_id} {os.getpid()} {start!r} {end!r}")
    return i


@job
async def once(tag: str) -> str:
    return tag


queue = qanat.Queue(jobs=[limited, once], storage=os.environ["QANAT_TEST_STORAGE"])
'''

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

#: A client process: announces itself, waits for the file ``go``, then starts ``once``
#: with one idempotency key and prints the id it got back.
RACER = r"""
import asyncio
import os
import sys
import time

from contention import append, once, queue

DIR = os.environ["QANAT_TEST_DIR"]


async def main():
    await queue.start(worker=False)
    try:
        append("racers.log", str(os.getpid()))
        end = time.monotonic() + 30
        while not os.path.exists(os.path.join(DIR, "go")):
            if time.monotonic() > end:
                raise TimeoutError("go never appeared")
            await asyncio.sleep(0.002)
        ex = await once.start(tag=str(os.getpid()), key="the-one-key")
        print(ex.id)
    finally:
        await queue.stop()


asyncio.run(main())
"""

ON_POSTGRES = pytest.mark.parametrize("project", ["postgres"], indirect=True)


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def all_finished(project: Project, job: str, n: int) -> list[ExecutionRecord]:
    async def body(q: Queue) -> list[ExecutionRecord]:
        page = await q.storage.query(ExecutionFilter(job=[job]), 10_000, None)
        return list(page.items)

    def done() -> list[ExecutionRecord] | None:
        recs = project.client(body)
        finished = [r for r in recs if r.status in FINISHED_STATUSES]
        return recs if len(recs) == n and len(finished) == n else None

    return project.wait_until(done, timeout=90, what=f"{n} {job} finished", interval=0.2)


@pytest.mark.slow
@ON_POSTGRES
@pytest.mark.timeout(150)
def test_eight_workers_never_run_more_than_three_at_once(project: Project) -> None:
    (project.root / "contention.py").write_text(CONTENTION_APP)
    app = "contention:queue"
    workers = [project.worker(app=app, ready=False) for _ in range(8)]
    for w in workers:
        w.wait_ready(timeout=60)
    module = project.load(project.root / "contention.py", f"contention_{id(project)}")
    n = 60

    async def enqueue(q: Queue) -> list[str]:
        return [e.id for e in await q.jobs.limited.start_many([{"i": i} for i in range(n)])]

    ids = project.client(enqueue, app=module.queue)
    recs = all_finished(project, "limited", n)

    assert {r.status for r in recs} == {"completed"}, [(r.status, r.error) for r in recs]
    rows = [line.split() for line in project.lines("limited.log")]
    assert sorted(r[0] for r in rows) == sorted(ids), "each execution ran exactly once"
    spans = [(float(s), float(e)) for _, _, s, e in rows]
    # never more than 3 at once, and the limit is reached (not serialised to fewer)
    assert max_overlap(spans) == 3
    pids = Counter(int(pid) for _, pid, _, _ in rows)
    assert set(pids) <= {w.pid for w in workers}
    assert len(pids) >= 3, f"the backlog was not shared between the workers: {pids}"


@pytest.mark.slow
@ON_POSTGRES
@pytest.mark.timeout(120)
def test_idempotency_key_raced_by_eight_processes_yields_one_execution(project: Project) -> None:
    (project.root / "contention.py").write_text(CONTENTION_APP)
    (project.root / "racer.py").write_text(RACER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(project.root / "racer.py")],
            cwd=project.root,
            env=project.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        project.wait_until(
            lambda: len(project.lines("racers.log")) == 8, timeout=60, what="8 racers ready"
        )
        project.touch("go")
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outs]
    got = {out.strip() for out, _ in outs}
    assert len(got) == 1, f"the racers got different executions: {got}"

    module = project.load(project.root / "contention.py", f"contention_{id(project)}")

    async def stored(q: Queue) -> list[ExecutionRecord]:
        page = await q.storage.query(ExecutionFilter(job=["once"]), 100, None)
        return list(page.items)

    recs = project.client(stored, app=module.queue)
    assert [r.id for r in recs] == list(got)
    assert recs[0].key == "the-one-key"


@pytest.mark.slow
@ON_POSTGRES
@pytest.mark.timeout(150)
def test_cron_tick_seen_by_four_workers_starts_one_execution(project: Project) -> None:
    (project.root / "cronapp.py").write_text(CRON_APP)
    workers = [project.worker(app="cronapp:queue", ready=False) for _ in range(4)]
    for w in workers:
        w.wait_ready(timeout=60)
    seen = len(project.lines("ticks.log"))
    project.wait_until(
        lambda: len(project.lines("ticks.log")) >= seen + 5,
        timeout=40,
        what="five ticks with all four workers up",
        interval=0.1,
    )
    project.stop_all()
    for w in workers:
        assert w.proc.returncode == 0, w.stderr()

    runs = Counter(float(line.split()[0]) for line in project.lines("ticks.log"))
    assert max(runs.values()) == 1, [t for t, k in runs.items() if k > 1]
    module = project.load(project.root / "cronapp.py", f"cronapp_{id(project)}")

    async def keys(q: Queue) -> list[str | None]:
        page = await q.storage.query(ExecutionFilter(job=["beat"]), 10_000, None)
        return [r.key for r in page.items]

    per_key = Counter(project.client(keys, app=module.queue))
    assert max(per_key.values()) == 1, "a tick was enqueued twice"
    ticks = sorted(t for t in (tick_of(k) for k in per_key) if t is not None)
    assert len(ticks) >= 5
    assert ticks == [ticks[0] + i for i in range(len(ticks))], "a tick was skipped"
    ran_by = {int(line.split()[1]) for line in project.lines("ticks.log")}
    assert ran_by <= {w.pid for w in workers}
    assert all(a < b for a, b in itertools.pairwise(sorted(runs)))
