"""Several worker processes on one SQLite file, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from qanat import Queue, codec

if TYPE_CHECKING:
    from conftest import Project

N = 2000


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "project",
    [
        "sqlite",
        "postgres",
        # About one SIGTERM in four left a Redis worker stuck after "draining: 0
        # running": redis-py turned a cancelled call into a ConnectionError that the
        # control loop swallowed (fixed: ``raise_if_cancelled`` in the engine's loops,
        # tests/unit/test_cancelled_loops.py; 14 of 14 clean stops since, against 2
        # hangs in 12 before). Kept as a non-strict xfail on that one exception until
        # it has run clean in CI for a while; every other failure still fails.
        pytest.param(
            "redis",
            marks=pytest.mark.xfail(
                raises=subprocess.TimeoutExpired,
                reason="a Redis worker sometimes hangs after draining on SIGTERM",
                strict=False,
            ),
        ),
    ],
    indirect=True,
)
def test_three_worker_processes_share_2000_executions(project: Project) -> None:
    sup = project.worker("--processes", "3", "--concurrency", "20", count=3)
    children = {
        int(line.split()[2].rsplit(":", 2)[1])
        for line in sup.stderr().splitlines()
        if " running jobs: " in line
    }
    assert len(children) == 3 and sup.pid not in children

    async def enqueue(q: Queue) -> list[str]:
        return [e.id for e in await q.jobs.record.start_many([{"i": i} for i in range(N)])]

    started = time.monotonic()
    ids = project.client(enqueue)
    assert len(set(ids)) == N

    async def completed(q: Queue) -> int:
        return int((await q.stats())["by_status"]["completed"])

    project.wait_until(
        lambda: project.client(completed) == N, timeout=60, what="all completed", interval=0.2
    )
    elapsed = time.monotonic() - started

    rows = [line.split() for line in project.lines("work.log")]
    seen = Counter(r[0] for r in rows)
    assert set(seen) == set(ids)
    pids = Counter(int(r[1]) for r in rows)
    assert len(pids) > 1, pids
    assert set(pids) <= children
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for eid, _, start, end in rows:
        spans[eid].append((float(start), float(end)))
    for eid, runs in spans.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"execution {eid} overlapped itself"
    assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1][:5]
    assert len(rows) == N

    async def outputs(q: Queue) -> dict[str, Any]:
        recs = await q.storage.get_many(ids)
        return {r.id: (r.status, codec.loads(r.output or "null")) for r in recs}

    got = project.client(outputs)
    assert sorted(v[1] for v in got.values()) == list(range(N))
    assert {v[0] for v in got.values()} == {"completed"}

    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    assert sup.stderr().count(" stopped") == 3
    assert elapsed < 60


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_drains_running_execution_and_leaves_queued_one(project: Project) -> None:
    first = project.start("slow", tag="first", seconds=1.5)
    second = project.start("slow", tag="second", seconds=1.5)
    w = project.worker("--concurrency", "1", "--grace", "10")
    project.wait_until(
        lambda: any(x.startswith("first start") for x in project.lines("slow.log")),
        what="first execution running",
    )
    assert project.get(first).status == "running"

    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - sent < 10, "the worker did not exit within its grace period"
    assert "draining" in w.stderr()

    done = project.get(first)
    assert done.status == "completed", done.error
    assert codec.loads(done.output or "null") == "first"
    assert [x.split()[:2] for x in project.lines("slow.log")] == [
        ["first", "start"],
        ["first", "end"],
    ]
    queued = project.get(second)
    assert queued.status == "pending" and queued.owner is None and queued.started_at is None

    project.worker()
    rec = project.wait_finished(second)
    assert rec.status == "completed", rec.error
    assert codec.loads(rec.output or "null") == "second"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_past_grace_hands_execution_back(project: Project) -> None:
    eid = project.start("slow", tag="long", seconds=120)
    w = project.worker("--grace", "0.5")
    project.wait_until(lambda: project.lines("slow.log"), what="execution running")

    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - sent < 5
    rec = project.get(eid)
    assert rec.status == "pending" and rec.owner is None, rec
    assert rec.completed_at is None

    second = project.worker()
    # The step in flight at shutdown runs again (at least once) in the new worker.
    project.wait_until(lambda: len(project.lines("slow.log")) >= 2, what="step restarted")
    project.touch("release-long")
    done = project.wait_finished(eid)
    assert done.status == "completed", done.error
    starts = [x.split() for x in project.lines("slow.log") if " start " in x]
    assert [int(pid) for _, _, pid in starts] == [w.pid, second.pid]


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_children_drain_when_their_supervisor_is_killed(project: Project) -> None:
    sup = project.worker("--processes", "2", count=2)
    children = [
        int(line.split()[2].rsplit(":", 2)[1])
        for line in sup.stderr().splitlines()
        if " running jobs: " in line
    ]
    assert len(children) == 2
    sup.kill()
    project.wait_until(lambda: not any(_running(p) for p in children), what="children exit")
    assert sup.stderr().count("is gone") == 2
    assert sup.stderr().count(" stopped") == 2
