"""Waiting for events across processes: an execution run by a ``qanat worker``
subprocess waits in ``pipe.wait_for``; ``qanat send`` from a shell wakes it, also after
the worker was SIGKILLed during the wait and a new one started."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Project

pytestmark = pytest.mark.timeout(90)

WAIT_APP = r"""
import os

import qanat
from qanat import Pipe, job

DIR = os.environ["QANAT_TEST_DIR"]

approvals = Pipe("approvals")


@job
async def order(order_id: int) -> dict:
    with open(os.path.join(DIR, "waiting.log"), "a") as f:
        f.write(f"{order_id} {os.getpid()}\n")
    approval = await approvals.wait_for({"order_id": order_id}, timeout="1h")
    return {"order_id": order_id, "approved": bool(approval and approval["approved"])}


queue = qanat.Queue(
    jobs=[order], pipes=[approvals], storage=os.environ["QANAT_TEST_STORAGE"]
)
"""

APP = "wait_app:queue"


def _start(project: Project, order_id: int) -> str:
    res = project.qanat(
        "start", "order", "--input", json.dumps({"order_id": order_id}), "--json", app=APP
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    return str(out["id"])


def _waiting(project: Project, execution_id: str) -> None:
    def check() -> bool:
        rec = project.get(execution_id)
        return rec.status == "waiting" and rec.owner is None

    project.wait_until(check, 30, "the execution to wait")


def _send(project: Project, data: dict[str, object]) -> dict[str, object]:
    res = project.qanat("send", "approvals", "--data", json.dumps(data), "--json", app=APP)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_cli_send_wakes_a_waiting_execution(project: Project) -> None:
    (project.root / "wait_app.py").write_text(WAIT_APP)
    w = project.worker(app=APP)
    a, b = _start(project, 1), _start(project, 2)
    _waiting(project, a)
    _waiting(project, b)
    _send(project, {"order_id": 3, "approved": True})  # nobody waits for 3
    _send(project, {"order_id": 2, "approved": True})
    rec = project.wait_finished(b)
    assert rec.status == "completed"
    assert json.loads(rec.output or "null") == {"order_id": 2, "approved": True}
    assert project.get(a).status == "waiting"
    _send(project, {"order_id": 1, "approved": False})
    rec = project.wait_finished(a)
    assert json.loads(rec.output or "null") == {"order_id": 1, "approved": False}
    assert {line.split()[1] for line in project.lines("waiting.log")} == {str(w.pid)}


@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_waiter_survives_sigkill_of_its_worker(project: Project) -> None:
    (project.root / "wait_app.py").write_text(WAIT_APP)
    first = project.worker(app=APP)
    ident = _start(project, 7)
    _waiting(project, ident)
    first.kill()
    second = project.worker(app=APP)
    _send(project, {"order_id": 7, "approved": True})
    rec = project.wait_finished(ident)
    assert rec.status == "completed"
    assert json.loads(rec.output or "null") == {"order_id": 7, "approved": True}
    pids = [line.split()[1] for line in project.lines("waiting.log")]
    assert pids[0] == str(first.pid) and pids[-1] == str(second.pid)
    [step] = [s for s in project.steps(ident) if s.kind == "wait"]
    assert step.key == "wait:approvals" and step.status == "completed"
