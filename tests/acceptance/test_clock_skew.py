"""Time comes from the storage: on PostgreSQL (and through an orchestration node) a
worker whose clock runs 10 s ahead (libfaketime) neither takes a live worker's
executions nor wakes durable sleeps early."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qanat import codec

if TYPE_CHECKING:
    from conftest import Project

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

SKEW_APP = """
import os, time
import qanat
from qanat import job, run, sleep
from app import append

def held(tag):
    append("held.log", f"{tag} start {os.getpid()}")
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        time.sleep(0.01)
    append("held.log", f"{tag} end {os.getpid()}")
    return tag

@job
async def hold(tag: str) -> str:
    return await run("held", held, tag)

@job
async def nap(seconds: float) -> str:
    await sleep(seconds)
    return "awake"

queue = qanat.Queue(jobs=[hold, nap], storage=os.environ["QANAT_TEST_STORAGE"], lease="3s")
"""


def _faketime() -> str:
    if not Path(LIBFAKETIME).exists() or shutil.which("faketime") is None:
        pytest.fail(
            f"libfaketime is missing ({LIBFAKETIME}): install it with "
            "`apt-get install -y faketime` (scripts/test.sh does)"
        )
    return LIBFAKETIME


def _start(project: Project, job: str, **data: object) -> str:
    res = project.qanat("start", job, "--input", json.dumps(data), app="skewapp:queue")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _text(project: Project, name: str) -> str:
    p = project.root / name
    return p.read_text(errors="replace") if p.exists() else ""


def _skewed_worker(project: Project, skew: str, log: str = "skewed.err") -> subprocess.Popen[bytes]:
    env = project.env(LD_PRELOAD=_faketime(), FAKETIME=skew, FAKETIME_DONT_RESET="1")
    with (project.root / log).open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "qanat", "worker", "skewapp:queue", "--hot-sleep", "0"],
            cwd=project.root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("project", ["postgres", "redis", "node"], indirect=True)
def test_worker_ten_seconds_ahead_takes_nothing_live_and_wakes_sleeps_on_time(
    project: Project,
) -> None:
    (project.root / "skewapp.py").write_text(SKEW_APP)
    # the skewed process really sees the future
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, "LD_PRELOAD": _faketime(), "FAKETIME": "+10s"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(out.stdout) - time.time() > 9

    a = project.worker("--hot-sleep", "0", app="skewapp:queue")
    tags = [f"t{i}" for i in range(4)]
    ids = [_start(project, "hold", tag=t) for t in tags]
    project.wait_until(
        lambda: len([x for x in project.lines("held.log") if " start " in x]) == 4,
        what="A started all 4 steps",
    )
    b = _skewed_worker(project, "+10s")
    try:
        project.wait_until(lambda: " running jobs: " in _text(project, "skewed.err"), what="B up")
        # B's clock is 10 s past A's 3 s leases: if it judged them by its own clock it
        # would take all 4 at once and run their steps again
        for eid in ids:
            rec = project.wait_finished(eid, timeout=60)
            assert rec.status == "completed", rec.error
        starts = [x.split() for x in project.lines("held.log") if " start " in x]
        assert sorted(t for t, _, _ in starts) == tags, starts  # every step ran once
        assert {int(pid) for _, _, pid in starts} == {a.pid}

        # 6 s durable sleeps put to sleep by C, 10 s *behind* (on its own clock the wake
        # time would be 4 s ago), then resumed by B, 10 s ahead (which on its own clock
        # would wake them at once): they wake after 6 s of real time, not sooner or later
        a.signal(signal.SIGTERM)
        assert a.wait(20) == 0
        c = _skewed_worker(project, "-10s", "behind.err")
        try:
            project.wait_until(lambda: " running jobs: " in _text(project, "behind.err"))
            b.send_signal(signal.SIGSTOP)  # only C claims the naps
            began = time.time()
            naps = [_start(project, "nap", seconds=6.0) for _ in range(3)]
            project.wait_until(
                lambda: all(project.get(e).status in ("waiting", "completed") for e in naps),
                what="naps asleep (or, woken early, done)",
            )
        finally:
            b.send_signal(signal.SIGCONT)
            c.terminate()
            assert c.wait(20) == 0
        for eid in naps:
            rec = project.wait_finished(eid, timeout=60)
            assert rec.status == "completed", rec.error
            assert codec.loads(rec.output or "null") == "awake"
            assert 6.0 <= time.time() - began < 11.0
            assert project.get(eid).claims == 2  # put to sleep by C, woken by B
    finally:
        b.terminate()
        b.wait(15)
