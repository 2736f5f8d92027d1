"""Redis faults with real processes (issue 12): a kill -9 of redis-server mid-drain,
a frozen (SIGSTOP) worker whose late writes must be refused, and eight processes racing
one idempotency key.

The kill test runs its own redis-server with ``appendfsync always`` (every acknowledged
write is on disk before the reply), kills it with SIGKILL while two workers drain a
backlog of three-step executions, keeps it down longer than a lease, and starts it again
on the same folder: the workers reconnect (with back-off) and consume again, every
execution completes once with its own output, and the only steps that run twice are the
ones in flight at the kill.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from qanat import Queue, codec
from qanat.storage.base import FINISHED_STATUSES, ExecutionFilter, ExecutionRecord
from services import RedisServer

if TYPE_CHECKING:
    from conftest import Project

APP = r"""
import asyncio
import os

import qanat
from qanat import job, run

DIR = os.environ["QANAT_TEST_DIR"]


def append(name, line):
    fd = os.open(os.path.join(DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def part(i, k):
    append("steps.log", f"{i} {k} {os.getpid()}")
    await asyncio.sleep(0.2)
    return k


@job
async def three_steps(i: int) -> int:
    total = 0
    for k in (1, 2, 3):
        total += await run(f"s{k}", part, i, k)
    return i * 100 + total


async def slow_part():
    append("zombie.log", f"start {os.getpid()}")
    await asyncio.sleep(3.0)
    append("zombie.log", f"end {os.getpid()}")
    return os.getpid()


@job
async def zombie() -> list:
    a = await run("s1", slow_part)
    b = await run("s2", os.getpid)
    return [a, b]


queue = qanat.Queue(jobs=[three_steps, zombie], storage=os.environ["QANAT_TEST_STORAGE"],
                    lease="2s")
"""

N = 30
OUTAGE = 4.0  # longer than a lease: leases lapse while the server is down


@pytest.fixture
def always_server() -> Iterator[RedisServer]:
    server = RedisServer(fsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _queue(project: Project) -> Queue:
    module = project.load(project.root / "faultapp.py", f"faultapp_{id(project)}")
    return Queue(jobs=list(module.queue.jobs), storage=project.storage_url)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill9_mid_drain_with_appendfsync_always_loses_and_doubles_nothing(
    project: Project, always_server: RedisServer
) -> None:
    project.storage_url = f"{always_server.url}?prefix=faults"
    (project.root / "faultapp.py").write_text(APP)
    workers = [
        project.worker("--concurrency", "4", app="faultapp:queue", ready=False) for _ in range(2)
    ]
    for w in workers:
        w.wait_ready(timeout=60)
    queue = _queue(project)

    async def main() -> tuple[list[str], list[ExecutionRecord]]:
        await queue.start(worker=False)
        try:
            ids = [
                e.id for e in await queue.jobs.three_steps.start_many([{"i": i} for i in range(N)])
            ]
            await asyncio.to_thread(
                project.wait_until,
                lambda: len(project.lines("steps.log")) >= 12,
                60,
                "a dozen steps run before the kill",
            )
            await asyncio.to_thread(always_server.crash)
            down = time.monotonic()
            while time.monotonic() < down + OUTAGE:
                await asyncio.sleep(0.1)
            for w in workers:
                assert w.proc.poll() is None, f"a worker died in the outage:\n{w.stderr()}"
            await asyncio.to_thread(always_server.start)
            last: list[ExecutionRecord] = []
            end = time.monotonic() + 90
            while True:
                page = await queue.storage.query(ExecutionFilter(job=["three_steps"]), 1000, None)
                last = page.items
                if all(r.status in FINISHED_STATUSES for r in last):
                    return ids, last
                assert time.monotonic() < end, (
                    f"unfinished 90 s after the restart: {Counter(r.status for r in last)}\n"
                    + "\n".join(w.stderr()[-3000:] for w in workers)
                )
                await asyncio.sleep(0.2)
        finally:
            await queue.stop()

    ids, recs = asyncio.run(main())
    assert sorted(r.id for r in recs) == sorted(ids)  # 0 lost (and nothing extra)
    for r in recs:
        assert r.status == "completed", r.error
    outputs = sorted(codec.loads(r.output or "null") for r in recs)
    assert outputs == [i * 100 + 6 for i in range(N)]
    runs = Counter(tuple(line.split()[:2]) for line in project.lines("steps.log"))
    assert set(runs) == {(str(i), str(k)) for i in range(N) for k in (1, 2, 3)}
    again = [step for step, n in runs.items() if n > 1]
    assert len(again) <= 8, again  # only steps in flight at the kill (2 workers x 4) rerun
    for w in workers:  # they reconnected and consumed after the restart
        assert "Redis" in w.stderr()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("project", ["redis"], indirect=True)
def test_a_frozen_worker_past_its_lease_has_its_late_writes_refused(project: Project) -> None:
    import signal

    (project.root / "faultapp.py").write_text(APP)
    a = project.worker(app="faultapp:queue")
    queue = _queue(project)

    async def start() -> str:
        await queue.start(worker=False)
        try:
            return (await queue.jobs.zombie.start()).id
        finally:
            await queue.stop()

    eid = asyncio.run(start())
    project.wait_until(lambda: any(x.startswith("start") for x in project.lines("zombie.log")))
    a.signal(signal.SIGSTOP)  # frozen in s1, holding the lease it can no longer renew
    try:
        b = project.worker(app="faultapp:queue")
        rec = project.wait_finished(eid, timeout=60)
    finally:
        a.signal(signal.SIGCONT)
    assert rec.status == "completed", rec.error
    assert codec.loads(rec.output or "null") == [b.pid, b.pid]
    assert rec.claims == 2 and rec.owner is None
    # A wakes up, finishes its copy of s1 and tries to checkpoint it: refused
    project.wait_until(
        lambda: f"end {a.pid}" in project.lines("zombie.log"), what="the zombie's step ended"
    )
    project.wait_until(lambda: a.proc.poll() is None and not project.get(eid).owner)
    steps = {s.key: s for s in project.steps(eid)}
    assert codec.loads(steps["s1"].result or "null") == b.pid, steps
    after = project.get(eid)
    assert after.status == "completed" and codec.loads(after.output or "null") == [b.pid, b.pid]


RACE = r"""
import asyncio, json, os, sys, time
import qanat
from faultapp import queue

async def main():
    await queue.start(worker=False)
    while time.time() < float(sys.argv[1]):
        await asyncio.sleep(0.001)
    e = await queue.jobs.three_steps.start(i=7, key="the-one")
    print(e.id, flush=True)
    await queue.stop()

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("project", ["redis"], indirect=True)
def test_eight_processes_racing_one_idempotency_key_store_one(project: Project) -> None:
    (project.root / "faultapp.py").write_text(APP)
    (project.root / "race.py").write_text(RACE)
    go = time.time() + 8.0  # every process is imported and connected by then
    procs = [
        subprocess.Popen(
            [sys.executable, "race.py", repr(go)],
            cwd=project.root,
            env=project.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        ids.append(out.strip())
    assert len(set(ids)) == 1, ids
    queue = _queue(project)

    async def count() -> list[ExecutionRecord]:
        await queue.start(worker=False)
        try:
            page = await queue.storage.query(ExecutionFilter(job=["three_steps"]), 100, None)
            return page.items
        finally:
            await queue.stop()

    recs = asyncio.run(count())
    assert [r.id for r in recs] == ids[:1]
    assert json.loads(recs[0].input)["i"] == 7
