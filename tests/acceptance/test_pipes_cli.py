"""Pipes across processes: ``qanat send`` in one process triggers a job that a
``qanat worker`` subprocess runs; ``qanat events`` lists the event and its execution."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Project

pytestmark = pytest.mark.timeout(90)

PIPES_APP = r"""
import os

import pydantic

import qanat
from qanat import Pipe, job

DIR = os.environ["QANAT_TEST_DIR"]


class Upload(pydantic.BaseModel):
    path: str
    size: int


uploads = Pipe("uploads", input=Upload)


@job(triggers=[uploads.into(lambda u: {"name": u.path, "size": u.size})])
async def index(name: str, size: int) -> str:
    with open(os.path.join(DIR, "indexed.log"), "a") as f:
        f.write(f"{name} {size} {os.getpid()}\n")
    return name.upper()


queue = qanat.Queue(
    jobs=[index], pipes=[uploads], storage=os.environ["QANAT_TEST_STORAGE"]
)
"""


@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_send_from_cli_triggers_worker_job_and_events_lists_it(project: Project) -> None:
    (project.root / "pipes_app.py").write_text(PIPES_APP)
    w = project.worker(app="pipes_app:queue")

    bad = project.qanat("send", "uploads", "--data", '{"path": 1}', app="pipes_app:queue")
    assert bad.returncode == 2 and "invalid data for pipe 'uploads'" in bad.stderr
    unknown = project.qanat("send", "nope", "--data", "{}", app="pipes_app:queue")
    assert unknown.returncode == 2 and "pipes: uploads" in unknown.stderr

    res = project.qanat(
        "send", "uploads", "--data", '{"path": "a.mp3", "size": 3}', "--json", app="pipes_app:queue"
    )
    assert res.returncode == 0, res.stderr
    sent = json.loads(res.stdout)
    assert sent["pipe"] == "uploads" and sent["failed"] == []
    [execution_id] = sent["executions"]

    rec = project.wait_finished(execution_id)
    assert rec.status == "completed" and json.loads(rec.output or "null") == "A.MP3"
    [line] = project.lines("indexed.log")
    assert line.startswith("a.mp3 3 ") and line.endswith(str(w.pid))

    listed = project.qanat("events", "--json", app="pipes_app:queue")
    assert listed.returncode == 0, listed.stderr
    [event] = json.loads(listed.stdout)
    assert event["id"] == sent["id"]
    assert event["executions"] == [execution_id]
    assert event["data"] == {"path": "a.mp3", "size": 3}

    text = project.qanat("events", "--pipe", "uploads", app="pipes_app:queue")
    assert text.returncode == 0 and sent["id"] in text.stdout and execution_id in text.stdout
    plain = project.qanat(
        "send", "uploads", "--data", '{"path": "b", "size": 1}', app="pipes_app:queue"
    )
    assert plain.returncode == 0, plain.stderr
    event_id, second = plain.stdout.split()
    assert project.wait_finished(second).status == "completed"
    newest = json.loads(project.qanat("events", "--json", app="pipes_app:queue").stdout)
    assert [e["id"] for e in newest] == [event_id, sent["id"]]
