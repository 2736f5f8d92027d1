"""Steering from the command line with a real worker process: paused jobs, bulk actions."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Project

pytestmark = pytest.mark.timeout(90)


def test_a_job_paused_from_another_process_starts_nothing_until_resumed(
    project: Project,
) -> None:
    project.worker()
    running = project.start("slow", tag="r", seconds=30)
    project.wait_until(lambda: project.lines("slow.log") == [f"r start {project.workers[0].pid}"])

    res = project.qanat("jobs", "pause", "slow", "add")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "pause: job 'slow' is now paused",
        "pause: job 'add' is now paused",
    ]
    assert project.qanat("jobs", "pause", "add").stdout.strip() == (
        "pause: job 'add' is already paused"
    )
    held = project.start("add", a=1, b=2)  # enqueueing still works
    # the worker claims after the pause (it runs record) but passes over add
    other = project.start("record", i=1)
    assert project.wait_finished(other).status == "completed"
    assert project.get(held).status == "pending"

    listed = {j["job"]: j["paused"] for j in project.json("jobs")}
    assert listed["slow"] is True and listed["add"] is True and listed["record"] is False
    assert project.json("stats")["paused_jobs"] == ["add", "slow"]
    assert "paused jobs   add, slow" in project.qanat("stats").stdout

    # the running execution of a paused job carries on to its end
    project.touch("release-r")
    assert project.wait_finished(running).status == "completed"

    resumed = project.json("jobs", "resume", "add")
    since = time.monotonic()
    assert resumed == [{"job": "add", "paused": False, "changed": True}]
    assert project.wait_finished(held, timeout=5).status == "completed"
    took = time.monotonic() - since
    assert took < 2.0, f"resume took {took:.2f}s to start the held execution"
    assert project.get(held).output == "3"


def test_jobs_pause_refuses_an_unknown_job(project: Project) -> None:
    res = project.qanat("jobs", "pause", "nope")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("Error: no job named 'nope'")
    assert project.json("stats")["paused_jobs"] == []


def test_bulk_cancel_retry_pause_resume_by_filters(project: Project) -> None:
    run42 = [
        project.qanat(
            "start", "add", "--group", "run-42", "--input", json.dumps({"a": i, "b": 0})
        ).stdout.strip()
        for i in range(3)
    ]
    other = project.start("add", a=9, b=9)

    res = project.qanat("pause", "--group", "run-42")
    assert res.returncode == 0 and res.stdout.strip() == "pause: 3 executions paused"
    assert project.json("resume", "--job", "add", "--status", "paused") == {
        "action": "resume",
        "filters": {"job": ["add"], "status": ["paused"]},
        "changed": 3,
    }
    res = project.qanat("cancel", "--group", "run-42")
    assert res.returncode == 0 and res.stdout.strip() == "cancel: 3 executions cancelled"
    assert {project.get(e).status for e in run42} == {"cancelled"}
    assert project.get(run42[0]).reason == "cancelled from the CLI"
    assert project.get(other).status == "pending"
    assert project.qanat("cancel", "--group", "run-42").stdout.strip() == (
        "cancel: 0 executions cancelled"
    )
    # time filters: nothing was cancelled an hour from now; an ISO time needs its zone
    assert project.json("retry", "--completed-after", "2999-01-01T00:00:00+00:00")["changed"] == 0
    naive = project.qanat("retry", "--completed-after", "2999-01-01T00:00:00")
    assert naive.returncode == 2 and "has no timezone" in naive.stderr
    res = project.qanat("retry", "--job", "add", "--completed-before", "0s")
    assert res.returncode == 0 and res.stdout.strip() == "retry: 3 executions retried"

    project.worker()
    for e in [*run42, other]:
        assert project.wait_finished(e).status == "completed"


def test_control_commands_want_an_id_or_filters_not_both(project: Project) -> None:
    eid = project.start("add", a=1, b=1)
    for action in ("cancel", "pause", "resume", "retry"):
        neither = project.qanat(action)
        assert neither.returncode == 2
        assert neither.stderr.strip() == (
            f"Error: {action}: give an execution ID or filters (--job, --status, --group, "
            "--started-before, ...)"
        )
        both = project.qanat(action, eid, "--job", "add")
        assert both.returncode == 2 and both.stderr.strip().endswith("not both")
    assert project.get(eid).status == "pending"
