"""``qanat worker --processes N``: the supervisor with real processes and real signals.

Children are counted from the process table (``/proc/<pid>/task/*/children``, zombies
left out), deaths and delays read from the supervisor's stderr.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qanat import Queue

if TYPE_CHECKING:
    from conftest import Project

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


def live_children(pid: int) -> set[int]:
    """The pids of ``pid``'s children that are alive (not zombies)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(p) for p in task.read_text().split())
        except FileNotFoundError:
            continue
    alive = set()
    for child in found:
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            alive.add(child)
    return alive


def count_children(pid: int, n: int) -> set[int] | None:
    kids = live_children(pid)
    return kids if len(kids) == n else None


@pytest.mark.timeout(90)
def test_a_killed_child_is_replaced_and_work_goes_on(project: Project) -> None:
    sup = project.worker("--processes", "2", count=2)
    first = project.wait_until(lambda: count_children(sup.pid, 2), what="2 children")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    now = project.wait_until(
        lambda: (k := count_children(sup.pid, 2)) and victim not in k and k,
        what="a replacement child",
    )
    (new,) = now - first
    assert new != victim and now - {new} == first - {victim}
    line = project.wait_until(
        lambda: next((x for x in sup.stderr().splitlines() if f"worker {victim} died" in x), None),
        what="the death line",
    )
    assert f"worker {victim} died: killed by SIGKILL" in line
    assert line.endswith("restarting in 0.5s")
    sup.wait_ready(count=3)  # the replacement announced itself as a worker
    assert f"restarted worker {new} (2 running)" in sup.stderr()

    async def enqueue(q: Queue) -> list[str]:
        return [e.id for e in await q.jobs.record.start_many([{"i": i} for i in range(40)])]

    ids = project.client(enqueue)

    async def done(q: Queue) -> int:
        return int((await q.stats())["by_status"].get("completed", 0))

    project.wait_until(lambda: project.client(done) == len(ids), timeout=40, what="all done")
    pids = {int(line.split()[1]) for line in project.lines("work.log")}
    assert pids <= now, "an execution ran outside the supervised children"

    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


@pytest.mark.timeout(90)
def test_sigttin_adds_and_sigttou_removes_a_child_then_sigterm_stops_all(
    project: Project,
) -> None:
    sup = project.worker("--processes", "2", count=2)
    first = project.wait_until(lambda: count_children(sup.pid, 2), what="2 children")

    sup.signal(signal.SIGTTIN)
    three = project.wait_until(lambda: count_children(sup.pid, 3), what="3 children")
    (added,) = three - first
    sup.wait_ready(count=3)
    assert f"SIGTTIN: added worker {added} (3 wanted)" in sup.stderr()

    sup.signal(signal.SIGTTOU)
    two = project.wait_until(lambda: count_children(sup.pid, 2), what="back to 2 children")
    assert two == first, "SIGTTOU must stop the newest child"
    project.wait_until(
        lambda: f"worker {added} removed: exited with status 0" in sup.stderr(),
        what="the removal line",
    )
    err = sup.stderr()
    assert f"SIGTTOU: stopping worker {added} (2 wanted)" in err
    assert re.search(rf"qanat worker \S+:{added}:\S+ draining", err), "it did not drain"
    assert "restarting in" not in err, "a removed child was restarted"

    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    assert not any(Path(f"/proc/{p}").exists() for p in two), "a child outlived its supervisor"
    err = sup.stderr()
    assert "SIGTERM: stopping 2 worker processes" in err
    assert err.count(" stopped\n") == 3  # every child drained and said so
    assert "every worker process has exited; exit status 0" in err


BROKEN = r"""
import os
import time

from app import append

if os.environ.get("QANAT_SUPERVISOR_PID"):
    append("boots.log", f"{os.getpid()} {time.time()!r}")
    raise RuntimeError("this app only breaks in worker children")

from app import queue
"""


@pytest.mark.timeout(90)
def test_children_that_keep_dying_are_restarted_with_growing_delays(project: Project) -> None:
    (project.root / "broken.py").write_text(BROKEN)
    sup = project.worker("--processes", "2", app="broken:queue", ready=False)
    death = re.compile(r"worker (\d+) died: exited with status 2 after \S+; restarting in (\S+)s")

    def deaths() -> list[tuple[int, float]] | None:
        found = [(int(p), float(d)) for p, d in death.findall(sup.stderr())]
        return found if len(found) >= 5 else None

    got = project.wait_until(deaths, timeout=40, what="5 deaths")
    assert [d for _, d in got[:5]] == [0.5, 1.0, 2.0, 4.0, 8.0]

    boots = sorted(
        (float(t), int(p)) for p, t in (line.split() for line in project.lines("boots.log"))
    )
    booted = {pid: t for t, pid in boots}
    # restarts happen in the order of the deaths (the delays only grow), so the k-th
    # death's replacement is boot k + 2 (after the first two); it must not come earlier
    # than the death (after its own boot) plus the delay
    for k, (pid, delay) in enumerate(got[:3]):
        assert boots[k + 2][0] >= booted[pid] + delay, (k, pid, delay, boots)

    sup.signal(signal.SIGTERM)
    sup.wait(30)
    assert not any(Path(f"/proc/{p}").exists() for p in booted), "a child outlived the supervisor"


@pytest.mark.timeout(60)
def test_a_child_that_exits_zero_on_its_own_is_replaced(project: Project) -> None:
    sup = project.worker("--processes", "2", count=2)
    first = project.wait_until(lambda: count_children(sup.pid, 2), what="2 children")
    quitter = max(first)
    os.kill(quitter, signal.SIGTERM)  # the child drains and exits 0; the supervisor did not ask
    now = project.wait_until(
        lambda: (k := count_children(sup.pid, 2)) and quitter not in k and k,
        what="a replacement child",
    )
    assert now & first == first - {quitter}
    assert re.search(
        rf"worker {quitter} exited with status 0 on its own after \S+; restarting in 0.5s",
        sup.stderr(),
    )
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_the_supervisor_refuses_a_queue_without_jobs_before_starting_children(
    project: Project,
) -> None:
    (project.root / "empty.py").write_text(
        "import os\nimport qanat\n"
        "queue = qanat.Queue(jobs=[], storage='sqlite:///' + os.environ['QANAT_TEST_DB'])\n"
    )
    res = project.qanat("worker", "empty:queue", "--processes", "2", app=None, timeout=30)
    assert res.returncode == 2
    assert "'empty:queue' has no jobs: there is nothing for a worker to run" in res.stderr
    assert "worker processes" not in res.stderr and "running jobs" not in res.stderr
