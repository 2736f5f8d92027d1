"""The ``qanat`` command as a user runs it: start, ls, show, control, stats, app lookup."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Project

pytestmark = pytest.mark.timeout(90)


def test_start_wait_prints_output_and_progress(project: Project) -> None:
    project.worker()
    res = project.qanat("start", "add", "--input", '{"a": 2, "b": 3}', "--wait")
    assert res.returncode == 0, res.stderr
    eid, output = res.stdout.splitlines()
    assert json.loads(output) == 5

    shown = project.json("show", eid)
    assert shown["status"] == "completed"
    assert shown["job"] == "add"
    assert shown["input"] == {"a": 2, "b": 3}
    assert shown["output"] == 5
    assert shown["progress"] == {"pct": 50.0, "message": "halfway", "details": None}
    assert [(s["key"], s["kind"], s["status"], s["attempts"]) for s in shown["steps"]] == [
        ("sum", "run", "completed", 1)
    ]
    assert [(g["message"], g["fields"]) for g in shown["logs"]] == [("adding", {"a": 2, "b": 3})]

    text = project.qanat("show", eid)
    assert text.returncode == 0, text.stderr
    for needle in (eid, "completed", "output     5", "steps:", "sum", "logs:", "adding"):
        assert needle in text.stdout

    as_json = project.json("start", "add", "--input", '{"a": 1, "b": 1}', "--wait")
    assert as_json["status"] == "completed" and as_json["output"] == 2


def test_start_wait_shows_progress_while_waiting(project: Project) -> None:
    project.worker()
    err = project.root / "start.err"
    with err.open("wb") as fe:
        waiting = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qanat",
                "-A",
                "app:queue",
                "start",
                "five_steps",
                "--input",
                '{"n": 7}',
                "--wait",
            ],
            cwd=project.root,
            env=project.env(),
            stdout=subprocess.PIPE,
            stderr=fe,
        )
    try:
        # Blocked in step 3, the execution has reported 40%; the waiting command shows it.
        project.wait_until(
            lambda: "progress 40% step 2 of 5" in err.read_text(), what="progress shown"
        )
        project.touch("go")
        out, _ = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err.read_text()
    eid, output = out.decode().splitlines()
    assert json.loads(output) == 157
    assert project.get(eid).status == "completed"


def test_start_wait_reports_failure_with_exit_1(project: Project) -> None:
    project.worker()
    res = project.qanat("start", "explode", "--input", '{"message": "kaboom"}', "--wait")
    assert res.returncode == 1
    eid = res.stdout.splitlines()[0]
    assert f"execution {eid} failed: ValueError: kaboom" in res.stderr
    assert project.json("show", eid)["error"]["message"] == "kaboom"


def test_start_without_wait_enqueues_and_key_is_idempotent(project: Project) -> None:
    first = project.qanat("start", "add", "--input", '{"a": 1, "b": 2}', "--key", "k1")
    again = project.qanat("start", "add", "--input", '{"a": 1, "b": 2}', "--key", "k1")
    assert first.returncode == again.returncode == 0
    assert first.stdout.strip() == again.stdout.strip()
    listed = project.json("ls")
    assert [(e["id"], e["status"], e["key"]) for e in listed] == [
        (first.stdout.strip(), "pending", "k1")
    ]


def test_bad_input_exits_2_and_stores_nothing(project: Project) -> None:
    res = project.qanat("start", "add", "--input", '{"a": "x", "b": 1}')
    assert res.returncode == 2
    assert "invalid input for job 'add'" in res.stderr
    assert "validation error" in res.stderr and "a\n" in res.stderr
    assert res.stdout == ""

    res = project.qanat("start", "add", "--input", '{"a": 1')
    assert res.returncode == 2
    assert "--input is not valid JSON" in res.stderr

    res = project.qanat("start", "add", "--input", "[1, 2]")
    assert res.returncode == 2
    assert "--input must be a JSON object" in res.stderr

    res = project.qanat("start", "nope", "--input", "{}")
    assert res.returncode == 2
    assert "no job named 'nope'" in res.stderr
    assert "add" in res.stderr and "five_steps" in res.stderr

    res = project.qanat("start", "add", "--input", '{"a": 1, "b": 1}', "--delay", "5 parsecs")
    assert res.returncode == 2
    assert "invalid option: invalid delay '5 parsecs'" in res.stderr

    assert not project.db.exists(), "a rejected start must not even open storage"
    assert project.json("ls") == []


def test_ls_filters(project: Project) -> None:
    a1 = project.qanat("start", "add", "--input", '{"a": 1, "b": 1}', "--group", "g1")
    a2 = project.qanat("start", "add", "--input", '{"a": 2, "b": 2}')
    ex = project.qanat("start", "explode", "--input", '{"message": "m"}', "--group", "g1")
    ids = [r.stdout.strip() for r in (a1, a2, ex)]

    def listed(*args: str) -> list[str]:
        return [e["id"] for e in project.json("ls", *args)]

    assert listed() == ids[::-1]  # newest first
    assert listed("--job", "add") == [ids[1], ids[0]]
    assert listed("--job", "add", "--job", "explode") == ids[::-1]
    assert listed("--group", "g1") == [ids[2], ids[0]]
    assert listed("--status", "pending", "--limit", "2") == [ids[2], ids[1]]
    assert listed("--status", "completed") == []

    one = project.json("ls", "--job", "explode")[0]
    assert one["input"] == {"message": "m"} and one["attempt"] == 1 and one["group"] == "g1"

    table = project.qanat("ls")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "JOB", "STATUS", "ATTEMPT", "CREATED", "DURATION", "NOTE"]
    assert [r.split()[0] for r in rows] == ids[::-1]

    bad = project.qanat("ls", "--status", "sleeping")
    assert bad.returncode == 2 and "sleeping" in bad.stderr


def test_pause_resume_cancel_retry_round_trip(project: Project) -> None:
    eid = project.start("add", a=20, b=22)

    def control(action: str, ok: bool = True) -> dict[str, object]:
        res = project.qanat(action, eid, "--json")
        out = json.loads(res.stdout)
        assert out["ok"] is ok and res.returncode == (0 if ok else 1), (action, out, res.stderr)
        return out

    assert control("pause")["status"] == "paused"
    assert control("resume")["status"] == "pending"
    assert control("resume", ok=False)["error"] == f"execution {eid} is pending, not paused"
    assert control("retry", ok=False)["status"] == "pending"
    assert control("cancel")["status"] == "cancelled"
    assert project.json("show", eid)["reason"] == "cancelled from the CLI"
    assert control("cancel", ok=False)["status"] == "cancelled"
    assert control("pause", ok=False)["status"] == "cancelled"
    assert control("retry")["status"] == "pending"

    text = project.qanat("pause", eid)
    assert text.returncode == 0 and f"pause: {eid} is now paused" in text.stdout
    text = project.qanat("resume", eid)
    assert text.returncode == 0 and "pending" in text.stdout

    project.worker()
    rec = project.wait_finished(eid)
    assert rec.status == "completed"
    assert project.json("show", eid)["output"] == 42
    refused = project.qanat("retry", eid)
    assert refused.returncode == 1
    assert "only failed or cancelled executions can be retried" in refused.stderr

    missing = project.qanat("show", "no-such-id")
    assert missing.returncode == 1 and "no execution with id 'no-such-id'" in missing.stderr


@pytest.mark.slow
def test_pause_a_running_execution_then_resume(project: Project) -> None:
    eid = project.start("five_steps", n=0)
    project.worker()
    project.wait_until(
        lambda: any(x.startswith("3 start") for x in project.lines("steps.log")),
        what="step 3 running",
    )
    out = project.json("pause", eid)
    assert out["ok"] is True and out["status"] == "running" and out["pause_requested"] is True
    project.touch("go")
    # The pause takes effect at the next step boundary, after step 3 is checkpointed.
    project.wait_until(lambda: project.get(eid).status == "paused", what="paused")
    assert [s.key for s in project.steps(eid)] == ["step1", "step2", "step3"]
    assert project.json("resume", eid)["ok"] is True
    rec = project.wait_finished(eid)
    assert rec.status == "completed"
    assert [x.split()[0] for x in project.lines("steps.log")] == ["1", "2", "3", "4", "5"]


def test_stats_json(project: Project) -> None:
    project.worker()
    for a in range(3):
        assert (
            project.qanat(
                "start", "add", "--input", json.dumps({"a": a, "b": 1}), "--wait"
            ).returncode
            == 0
        )
    assert (
        project.qanat("start", "explode", "--input", '{"message": "x"}', "--wait").returncode == 1
    )
    stats = project.json("stats")
    assert stats["by_status"]["completed"] == 3
    assert stats["by_status"]["failed"] == 1
    assert stats["by_job"]["add"] == {"completed": 3}
    assert stats["by_job"]["explode"] == {"failed": 1}
    assert stats["retries"] == 0
    assert stats["mean_runtime"] > 0 and stats["p95_runtime"] >= stats["mean_runtime"] * 0.5

    text = project.qanat("stats")
    assert text.returncode == 0
    assert "COMPLETED" in text.stdout and "p95 runtime" in text.stdout


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (None, "no app given: pass -A module:queue or set QANAT_APP"),
        ("app", "invalid app 'app': expected module:attribute"),
        ("app:", "invalid app 'app:': expected module:attribute"),
        (
            "no_such_module:queue",
            "cannot import app module 'no_such_module': no module named 'no_such_module'",
        ),
        ("app:nope", "app module 'app' has no attribute 'nope'"),
        ("app:queue.nope", "app module 'app' has no attribute 'queue.nope'"),
        ("app:not_a_queue", "'app:not_a_queue' is a builtins.dict, not a qanat.Queue"),
    ],
)
def test_bad_app_gives_a_one_line_error(project: Project, app: str | None, message: str) -> None:
    for args in (["ls"], ["worker"] if app is None else ["worker", app]):
        res = project.qanat(*args, app=None if args[0] == "worker" else app)
        assert res.returncode == 2, res
        assert message in res.stderr
        assert res.stderr.strip().count("\n") == 0, res.stderr


def test_qanat_app_environment_variable(project: Project) -> None:
    env = project.env(QANAT_APP="app:queue")
    eid = project.qanat("start", "add", "--input", '{"a": 1, "b": 1}', app=None, env=env)
    assert eid.returncode == 0, eid.stderr
    res = project.qanat("ls", "--json", app=None, env=env)
    assert res.returncode == 0 and [e["id"] for e in json.loads(res.stdout)] == [eid.stdout.strip()]
    # -A wins over the environment.
    bad_env = project.env(QANAT_APP="app:nope")
    res = project.qanat("ls", "--json", app="app:queue", env=bad_env)
    assert res.returncode == 0, res.stderr
    res = project.qanat("ls", app=None, env=bad_env)
    assert res.returncode == 2 and "has no attribute 'nope'" in res.stderr


def test_python_dash_m_qanat(project: Project) -> None:
    res = project.qanat("--help", app=None)
    assert res.returncode == 0
    for command in ("worker", "start", "ls", "show", "cancel", "pause", "resume", "retry", "stats"):
        assert command in res.stdout


SMALL_LIMIT_APP = """
import os
import qanat
from qanat import job

@job
async def echo(s: str) -> str:
    return s

notes = qanat.Pipe("notes")
queue = qanat.Queue(
    jobs=[echo], pipes=[notes], storage="sqlite:///" + os.environ["QANAT_TEST_DB"],
    max_payload="1KB",
)
"""


def test_payload_over_max_payload_exits_2_with_one_line(project: Project) -> None:
    (project.root / "small.py").write_text(SMALL_LIMIT_APP)
    big = json.dumps({"s": "x" * 2000})
    res = project.qanat("start", "echo", "--input", big, app="small:queue")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "Error: the input of job 'echo' is 1.961 KB (2,008 bytes of JSON), "
        "over the limit of 1 KB (Queue(max_payload=))"
    )
    res = project.qanat("send", "notes", "--data", json.dumps("y" * 2000), app="small:queue")
    assert res.returncode == 2
    assert "Error: the data of pipe 'notes' is 1.955 KB" in res.stderr
    assert "Traceback" not in res.stderr
    res = project.qanat("ls", "--json", app="small:queue")
    assert json.loads(res.stdout) == []
