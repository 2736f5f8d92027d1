"""A PostgreSQL crash-restart while workers run (issue 9, item 6).

``pg_ctl stop -m immediate`` kills every backend at once (as a crash would) while two
worker processes are in the middle of a backlog of three-step executions; the server
stays down for a while, then starts on the same data. The workers must log the fault,
keep retrying and carry on once the server is back; every execution completes, none is
lost or doubled, and each step ran once, except the one step in flight at the crash,
which may run again. A call made from application code during the outage raises
``StorageError`` within a bounded time instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from qanat import Queue, StorageError, codec
from qanat.storage.base import FINISHED_STATUSES, ExecutionFilter, ExecutionRecord
from services import PostgresServer

if TYPE_CHECKING:
    from conftest import Project

RESTART_APP = r'''
import asyncio
import os

import qanat
from qanat import job, run

DIR = os.environ["QANAT_TEST_DIR"]


def append(name, line):
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(os.path.join(DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def part(i, k):
    append("steps.log", f"{i} {k} {os.getpid()}")
    await asyncio.sleep(0.25)
    return k


@job
async def three_steps(i: int) -> int:
    total = 0
    for k in (1, 2, 3):
        total += await run(f"s{k}", part, i, k)
    return i * 100 + total


queue = qanat.Queue(jobs=[three_steps], storage=os.environ["QANAT_TEST_STORAGE"], lease="4s")
'''

N = 40
#: how long the server stays down: longer than a lease, so leases lapse meanwhile
OUTAGE = 5.0
#: the most a call from application code may take to give up while the server is down
BOUNDED = 15.0


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("project", ["postgres"], indirect=True)
def test_postgres_restart_loses_doubles_and_strands_nothing(
    project: Project, postgres_server: PostgresServer
) -> None:
    (project.root / "restartapp.py").write_text(RESTART_APP)
    app = "restartapp:queue"
    workers = [project.worker("--concurrency", "4", app=app, ready=False) for _ in range(2)]
    for w in workers:
        w.wait_ready(timeout=60)
    module = project.load(project.root / "restartapp.py", f"restartapp_{id(project)}")
    queue = Queue(jobs=list(module.queue.jobs), storage=project.storage_url)

    async def main() -> tuple[list[str], float, str, list[ExecutionRecord], int]:
        await queue.start(worker=False)
        try:
            ids = [
                e.id for e in await queue.jobs.three_steps.start_many([{"i": i} for i in range(N)])
            ]
            await asyncio.to_thread(
                project.wait_until,
                lambda: len(project.lines("steps.log")) >= 12,
                30,
                "a dozen steps run before the crash",
            )
            await asyncio.to_thread(postgres_server.crash)
            down = time.monotonic()
            t0 = time.monotonic()
            try:
                await queue.jobs.three_steps.start(i=-1)
            except StorageError as exc:
                message = str(exc)
            else:
                raise AssertionError("an enqueue with the server down did not fail")
            took = time.monotonic() - t0
            # the outage lasts at least OUTAGE: what workers do meanwhile is the point
            while time.monotonic() < down + OUTAGE:
                await asyncio.sleep(0.1)
            for w in workers:
                assert w.proc.poll() is None, f"a worker died in the outage:\n{w.stderr()}"
            await asyncio.to_thread(postgres_server.start)

            failures = 0

            async def finished() -> list[ExecutionRecord] | None:
                nonlocal failures
                try:
                    page = await queue.storage.query(
                        ExecutionFilter(job=["three_steps"]), 10_000, None
                    )
                except StorageError:
                    failures += 1  # the first call after the restart may meet the old connection
                    return None
                recs = list(page.items)
                nonlocal last
                last = recs
                return recs if all(r.status in FINISHED_STATUSES for r in recs) else None

            last: list[ExecutionRecord] = []

            end = time.monotonic() + 60
            while (recs := await finished()) is None:
                assert time.monotonic() < end, (
                    "executions still unfinished 60 s after the restart: "
                    f"{Counter((r.status, r.owner is not None) for r in last)}\n"
                    + "\n".join(w.stderr()[-3000:] for w in workers)
                )
                await asyncio.sleep(0.2)
            return ids, took, message, recs, failures
        finally:
            await queue.stop()

    ids, took, message, recs, failures = asyncio.run(main())

    assert took < BOUNDED, f"a call during the outage took {took:.1f}s to fail"
    assert "PostgreSQL" in message and "qanat-test-pw" not in message, message
    assert failures <= 2, f"the client kept failing after the server was back ({failures})"

    # nothing lost, nothing doubled (the enqueue during the outage did not happen)
    assert sorted(r.id for r in recs) == sorted(ids)
    assert Counter(r.status for r in recs) == {"completed": N}, [
        (r.id, r.status, r.error) for r in recs if r.status != "completed"
    ]
    assert sorted(codec.loads(r.output or "null") for r in recs) == [i * 100 + 6 for i in range(N)]
    # a broken connection is not the job's failure: no attempt was spent on it (the
    # executions in flight were recovered after their lease, as from a dead worker)
    assert {r.attempt for r in recs} == {1}, [(r.id, r.attempt, r.error) for r in recs]

    # each step ran once, except the step in flight at the crash (at most one per execution)
    runs = Counter(
        (int(i), int(k)) for i, k, _ in (line.split() for line in project.lines("steps.log"))
    )
    assert set(runs) == {(i, k) for i in range(N) for k in (1, 2, 3)}
    assert max(runs.values()) <= 2, [key for key, n in runs.items() if n > 2]
    rerun = Counter(i for (i, _), n in runs.items() if n == 2)
    assert max(rerun.values(), default=0) <= 1, (
        f"more than one step of an execution ran twice: {rerun}"
    )

    # the workers saw the fault, said so, and are still running
    for w in workers:
        assert w.proc.poll() is None, w.stderr()
        assert "qanat:" in w.stderr() and "PostgreSQL" in w.stderr(), w.stderr()[-3000:]
    project.stop_all()
    for w in workers:
        assert w.proc.returncode == 0, w.stderr()[-3000:]
