"""Poison pills and fencing with real worker processes sharing one SQLite file.

A step that kills its worker (``os._exit``) takes down one worker after another until
``max_recoveries`` of them died under it; the next worker fails the execution with
``WorkerLost`` and lives. A worker frozen (SIGSTOP) past its lease in a step, whose
execution another worker took over and finished, writes nothing once thawed: its late
progress, log line, step result and finish are refused.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from qanat import Queue, codec
from qanat.failures import error_fields
from qanat.storage.base import LogRecord

if TYPE_CHECKING:
    from conftest import Project, Worker

POISON_APP = r'''
import os
import time

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


def prepare():
    append("prepare.log", str(os.getpid()))
    return "ready"


def die():
    append("deaths.log", str(os.getpid()))
    os._exit(1)  # as a segfault in a C extension or the OOM killer would


@job
async def pill() -> str:
    await run("prepare", prepare)
    return await run("die", die)


def first_step():
    me = os.getpid()
    append("fenced.log", f"start {me}")
    end = time.monotonic() + 60
    while not os.path.exists(os.path.join(DIR, "go")) and time.monotonic() < end:
        time.sleep(0.01)
    qanat.progress(50, f"s1 by {me}")
    qanat.log(f"s1 by {me}")
    append("fenced.log", f"late {me}")  # progress and log were handed to the worker
    return f"s1 by {me}"


@job
async def fenced() -> str:
    s1 = await run("s1", first_step)
    return f"done by {os.getpid()} after {s1}"


queue = qanat.Queue(
    jobs=[pill, fenced],
    storage="sqlite:///" + os.environ["QANAT_TEST_DB"],
    lease="2s",
    max_recoveries=3,
)
'''


def _app(project: Project) -> ModuleType:
    path = project.root / "poison_app.py"
    if not path.exists():
        path.write_text(POISON_APP)
    return project.load(path, f"qanat_poison_app_{id(project)}")


def _start(project: Project, job: str) -> str:
    async def body(q: Queue) -> str:
        return (await q.jobs[job].start()).id

    return project.client(body, _app(project).queue)


def _logs(project: Project, eid: str) -> list[LogRecord]:
    async def body(q: Queue) -> list[LogRecord]:
        return await q.storage.logs(eid)

    return project.client(body, _app(project).queue)


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T in /proc)."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    return all((t / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for t in tasks)


def _freeze_outside_a_write(project: Project, w: Worker) -> None:
    """SIGSTOP ``w`` at a moment it holds no SQLite write lock (a worker frozen inside a
    commit would block every other writer: SQLite's locks are the frozen process's)."""
    for _ in range(50):
        w.signal(signal.SIGSTOP)
        project.wait_until(lambda: _stopped(w.pid), what="worker stopped")
        conn = sqlite3.connect(project.db, timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # frozen mid-commit: thaw and try again
            w.signal(signal.SIGCONT)
        finally:
            conn.close()
    raise AssertionError("the worker was in a write transaction at every try")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_poison_pill_fails_with_worker_lost_after_three_worker_deaths(project: Project) -> None:
    eid = _start(project, "pill")
    dead: list[int] = []
    for n in range(1, 4):
        w = project.worker(app="poison_app:queue", ready=False)
        # each worker reclaims its dead predecessor's execution at start (same host)
        assert w.wait(60) == 1, w.stderr()
        dead.append(w.pid)
        assert project.lines("deaths.log") == [str(p) for p in dead]
        rec = project.get(eid)
        assert (rec.status, rec.recoveries) == ("running", n - 1)
    survivor = project.worker(app="poison_app:queue")
    rec = project.wait_finished(eid)
    assert rec.status == "failed"
    err = error_fields(rec.error or "{}")
    assert err["type"] == "WorkerLost", err
    assert "3 workers died" in err["message"] and "in step 'die'" in err["message"], err
    assert project.lines("deaths.log") == [str(p) for p in dead]  # not run a 4th time
    assert project.lines("prepare.log") == [str(dead[0])]  # checkpointed: never again
    assert rec.attempt == 1  # not retried
    assert survivor.proc.poll() is None, survivor.stderr()
    assert [s.key for s in project.steps(eid)] == ["prepare"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_worker_frozen_past_its_lease_writes_nothing_after_it_thaws(project: Project) -> None:
    eid = _start(project, "fenced")
    frozen = project.worker(app="poison_app:queue")
    project.wait_until(
        lambda: f"start {frozen.pid}" in project.lines("fenced.log"), what="A in step s1"
    )
    _freeze_outside_a_write(project, frozen)
    try:
        project.touch("go")
        # A's pid is alive, so B may take it only once A's 2 s lease has lapsed
        taker = project.worker(app="poison_app:queue")
        done = project.wait_finished(eid, timeout=30)
        assert done.status == "completed", done.error
        steps_before = project.steps(eid)
        logs_before = _logs(project, eid)
    finally:
        frozen.signal(signal.SIGCONT)
    project.wait_until(
        lambda: f"late {frozen.pid}" in project.lines("fenced.log"), what="A's late writes"
    )
    frozen.signal(signal.SIGTERM)  # A stops: what it queued is committed, or refused
    assert frozen.wait(30) == 0, frozen.stderr()

    b = f"s1 by {taker.pid}"
    rec = project.get(eid)
    assert (rec.status, rec.owner, rec.completed_at) == ("completed", None, done.completed_at)
    assert codec.loads(rec.output or "null") == f"done by {taker.pid} after {b}"
    progress: Any = codec.loads(rec.progress or "null")
    assert progress["message"] == b, progress  # not A's late "s1 by <A>"
    steps = project.steps(eid)
    assert steps == steps_before
    assert [(s.key, codec.loads(s.result or "null")) for s in steps] == [("s1", b)]
    logs = _logs(project, eid)
    assert logs == logs_before
    assert [g.message for g in logs] == [b]
    assert f"start {taker.pid}" in project.lines("fenced.log")  # B really ran s1 again
    assert rec.recoveries == 0  # B's checkpoint reset the count its takeover started
