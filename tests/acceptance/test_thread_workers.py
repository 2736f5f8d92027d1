"""``thread`` steps in a real ``qanat worker`` process on a SQLite file.

The children crash for real (a segfault, ``os._exit``) while the same worker runs other
executions; a cancel from the CLI, and the worker's own death, leave no child running
(checked in the process table by the pid each child writes before it sleeps).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from qanat import Queue, codec
from qanat.storage.base import FINISHED_STATUSES, ExecutionRecord

if TYPE_CHECKING:
    from conftest import Project

APP = "thread_app:queue"

THREAD_APP = r'''
import ctypes
import os
import time

from qanat import Queue, Step, job, run, thread

DIR = os.environ["QANAT_TEST_DIR"]


def path(name):
    return os.path.join(DIR, name)


def crash_twice(how, tag):
    """Crash (segfault or exit code 3) on the first two calls for ``tag``, then succeed."""
    marker = path(f"crash-{tag}")
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    with open(marker) as f:
        calls = len(f.read().split())
    if calls <= 2:
        if how == "segfault":
            ctypes.string_at(0)
        os._exit(3)
    return os.getpid()


def square(i):
    return i * i


def write_pid_and_sleep(name, seconds):
    with open(path(name + ".tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(path(name + ".tmp"), path(name))
    time.sleep(seconds)
    return os.getpid()


@job(retry=1)
async def crashy(how: str, tag: str) -> int:
    return await thread(Step("crash", retry=3, backoff=0), crash_twice, how, tag)


@job
async def steady(i: int) -> int:
    here = await run("here", lambda: i)
    there = await thread("there", square, i)
    return here + there


@job(retry=1)
async def napper(name: str) -> int:
    return await thread("nap", write_pid_and_sleep, name, 60)


queue = Queue(
    jobs=[crashy, steady, napper],
    storage="sqlite:///" + os.environ["QANAT_TEST_DB"],
    threads=2,
)
'''


_modules: dict[Path, ModuleType] = {}


def _app(project: Project) -> ModuleType:
    """thread_app.py of ``project``, written there and imported here (for enqueueing)."""
    path = project.root / "thread_app.py"
    if path not in _modules:
        path.write_text(THREAD_APP)
        _modules[path] = project.load(path, f"qanat_thread_app_{id(project)}")
    return _modules[path]


def _start(project: Project, *calls: tuple[str, dict[str, Any]]) -> list[str]:
    """Enqueue ``(job, input)`` calls in one client session; their execution ids."""
    app = _app(project)

    async def body(q: Queue) -> list[str]:
        return [(await q.jobs[job].start(**data)).id for job, data in calls]

    return project.client(body, app.queue)


def _results(project: Project, ids: list[str], timeout: float = 30.0) -> list[ExecutionRecord]:
    """The records of ``ids`` once every one of them has finished."""

    async def body(q: Queue) -> list[ExecutionRecord] | None:
        recs = [await q.storage.get(i) for i in ids]
        done = [r for r in recs if r is not None and r.status in FINISHED_STATUSES]
        return done if len(done) == len(ids) else None

    queue = _app(project).queue
    return project.wait_until(lambda: project.client(body, queue), timeout, "executions finished")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pid_in(project: Project, name: str) -> int | None:
    p = project.root / name
    return int(p.read_text()) if p.exists() else None


@pytest.mark.timeout(90)
def test_thread_children_crash_while_the_worker_runs_other_executions(project: Project) -> None:
    _app(project)
    worker = project.worker(app=APP)
    ids = _start(
        project,
        *[("crashy", {"how": how, "tag": how}) for how in ("segfault", "exit")],
        *[("steady", {"i": i}) for i in range(12)],
    )
    crashers, others = _results(project, ids[:2]), _results(project, ids[2:])

    for i, rec in enumerate(others):
        assert rec.status == "completed", rec.error
        assert codec.loads(rec.output or "null") == i + i * i
    children: set[int] = set()
    for how, rec in zip(("segfault", "exit"), crashers, strict=True):
        assert rec.status == "completed", rec.error
        pids = project.lines(f"crash-{how}")
        assert len(pids) == 3 and len(set(pids)) == 3  # two dead children, then a new one
        assert codec.loads(rec.output or "null") == int(pids[2])
        [step] = project.steps(rec.id)
        assert (step.kind, step.status, step.attempts) == ("thread", "completed", 3)
        children |= {int(p) for p in pids}
    assert worker.proc.poll() is None  # the worker itself never went down
    assert worker.pid not in children


@pytest.mark.timeout(90)
def test_cancel_from_the_cli_kills_the_thread_child(project: Project) -> None:
    _app(project)
    worker = project.worker(app=APP)
    [eid] = _start(project, ("napper", {"name": "nap.pid"}))
    child = project.wait_until(lambda: _pid_in(project, "nap.pid"), what="child started")
    assert _alive(child) and child != worker.pid
    res = project.qanat("cancel", eid, app=APP)
    assert res.returncode == 0, res.stderr
    project.wait_until(lambda: not _alive(child), timeout=10, what="thread child killed")
    assert project.get(eid).status == "cancelled"
    [rec] = _results(project, _start(project, ("steady", {"i": 3})))  # a new child runs it
    assert rec.status == "completed" and codec.loads(rec.output or "null") == 12
    assert worker.proc.poll() is None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_thread_child_outlives_its_worker(project: Project, sig: int) -> None:
    _app(project)
    worker = project.worker("--grace", "0.5", app=APP)
    _start(project, ("napper", {"name": "nap.pid"}))
    child = project.wait_until(lambda: _pid_in(project, "nap.pid"), what="child started")
    assert _alive(child)
    os.kill(worker.pid, sig)
    worker.wait(20)
    project.wait_until(lambda: not _alive(child), timeout=10, what="thread child gone")
