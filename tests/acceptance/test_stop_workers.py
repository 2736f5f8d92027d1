"""Stopping ``qanat worker`` processes with SIGTERM at step boundaries (SPEC §10)."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import pytest

from qanat import codec

if TYPE_CHECKING:
    from conftest import Project

#: Jobs whose plain ``def`` code blocks its thread: Python can't interrupt it.
BLOCKING_APP = r'''
import os
import time

import qanat
from qanat import job, run

DIR = os.environ["QANAT_TEST_DIR"]


def block(tag):
    """Blocks its thread for 20 s the first time, then returns at once."""
    first = not os.path.exists(os.path.join(DIR, f"ran-{tag}"))
    with open(os.path.join(DIR, "blocking.log"), "a") as f:
        f.write(f"{tag} start {os.getpid()}\n")
    open(os.path.join(DIR, f"ran-{tag}"), "w").close()
    if first:
        time.sleep(20)
    return tag


@job
async def plain_step(tag: str) -> str:
    return await run("block", block, tag)


@job
def plain_handler(tag: str) -> str:
    return block(tag)


queue = qanat.Queue(
    jobs=[plain_step, plain_handler], storage="sqlite:///" + os.environ["QANAT_TEST_DB"]
)
'''


def _draining(w: object) -> bool:
    return "draining" in w.stderr()  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_during_a_long_step_exits_after_it_and_the_step_is_not_run_again(
    project: Project,
) -> None:
    eid = project.start("five_steps", n=1)
    w = project.worker("--grace", "30")
    project.wait_until(lambda: "3 start" in " ".join(project.lines("steps.log")), what="step 3")

    w.signal(signal.SIGTERM)
    project.wait_until(lambda: _draining(w), what="the worker draining")
    project.touch("go")  # step 3 may finish now; step 4 must not start here
    sent = time.monotonic()
    assert w.wait(15) == 0
    assert time.monotonic() - sent < 3, "the worker did not exit right after the step"
    rec = project.get(eid)
    assert rec.status == "pending" and rec.owner is None, rec
    assert [s.key for s in project.steps(eid)] == ["step1", "step2", "step3"]
    assert [x.split()[:2] for x in project.lines("steps.log")] == [
        ["1", "start"],
        ["2", "start"],
        ["3", "start"],
    ]

    nxt = project.worker()
    done = project.wait_finished(eid)
    assert done.status == "completed", done.error
    assert codec.loads(done.output or "null") == 1 + 10 + 20 + 30 + 40 + 50
    runs = [x.split() for x in project.lines("steps.log")]
    assert [(i, int(pid)) for i, _, pid in runs] == [
        ("1", w.pid),
        ("2", w.pid),
        ("3", w.pid),
        ("4", nxt.pid),
        ("5", nxt.pid),
    ]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_grace_expiry_interrupts_the_step_and_it_runs_again_elsewhere(project: Project) -> None:
    eid = project.start("slow", tag="long", seconds=120)
    w = project.worker("--grace", "1")
    project.wait_until(lambda: project.lines("slow.log"), what="the step running")

    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    took = time.monotonic() - sent
    assert 1 <= took < 2.5, f"exited {took:.2f}s after SIGTERM with --grace 1"
    rec = project.get(eid)
    assert rec.status == "pending" and rec.owner is None, rec
    assert project.steps(eid) == []

    nxt = project.worker()
    project.wait_until(lambda: len(project.lines("slow.log")) >= 2, what="step restarted")
    project.touch("release-long")
    done = project.wait_finished(eid)
    assert done.status == "completed", done.error
    starts = [x.split() for x in project.lines("slow.log") if " start " in x]
    assert [int(pid) for _, _, pid in starts] == [w.pid, nxt.pid]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("hot_sleep", ["5", "0.5"], ids=["in-memory", "suspended"])
def test_sigterm_during_a_durable_sleep_exits_at_once_and_wakes_on_time_elsewhere(
    project: Project, hot_sleep: str
) -> None:
    eid = project.start("napper", seconds=3)
    w = project.worker("--hot-sleep", hot_sleep, "--grace", "30")
    project.wait_until(lambda: project.get(eid).status == "waiting", what="sleeping")
    before = float(project.lines("before.log")[0].split()[1])

    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - sent < 1.5, "the worker waited for the sleep"
    assert project.get(eid).owner is None

    project.worker()
    done = project.wait_finished(eid)
    assert done.status == "completed", done.error
    after = [float(x.split()[1]) for x in project.lines("after.log")]
    assert len(after) == 1
    late = after[0] - (before + 3)
    assert 0 <= late < 1.5, f"woke {late:+.2f}s from the recorded wake-up time"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("job_name", ["plain_step", "plain_handler"])
def test_plain_code_blocking_past_the_grace_does_not_keep_the_process_alive(
    project: Project, job_name: str
) -> None:
    (project.root / "blocking_app.py").write_text(BLOCKING_APP)
    w = project.worker("--grace", "1", app="blocking_app:queue")
    res = project.qanat("start", job_name, "--input", '{"tag": "t"}', app="blocking_app:queue")
    assert res.returncode == 0, res.stderr
    eid = res.stdout.strip()
    project.wait_until(lambda: project.lines("blocking.log"), what="the thread blocked")

    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    took = time.monotonic() - sent
    assert took < 2.5, f"exited {took:.2f}s after SIGTERM with --grace 1 (the thread sleeps 20 s)"
    rec = project.get(eid)
    assert rec.status == "pending" and rec.owner is None, rec

    nxt = project.worker(app="blocking_app:queue")
    done = project.wait_finished(eid)
    assert done.status == "completed", done.error
    assert codec.loads(done.output or "null") == "t"
    pids = [int(x.split()[2]) for x in project.lines("blocking.log")]
    assert pids == [w.pid, nxt.pid]
