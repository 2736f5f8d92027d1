"""Metrics and traces with real ``qanat worker`` processes on SQLite (SPEC §14).

* ``--metrics-port``: the exposition parses and its counters move as the worker's
  executions end; a token guards it; a non-loopback bind without one is refused;
* ``--processes 2``: one port, one view summing both processes' counts;
* traces: the caller's span (this process) is the parent of the attempts' spans, and
  those of their steps, recorded in the worker process by an SDK exporter writing JSON
  lines to a file (``OBS_APP``).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qanat import Execution, Queue
from support import sdk_tracing

if TYPE_CHECKING:
    from conftest import Project, Worker

OBS_APP = r'''
import asyncio
import json
import os

import qanat
from qanat import Context, job, run

DIR = os.environ["QANAT_TEST_DIR"]


def append(name, line):
    fd = os.open(os.path.join(DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


if os.environ.get("QANAT_TEST_SPANS"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class FileExporter(SpanExporter):
        """Each finished span as one JSON line (one O_APPEND write: processes may share it)."""

        def export(self, spans):
            for s in spans:
                append(os.environ["QANAT_TEST_SPANS"], json.dumps({
                    "name": s.name,
                    "trace_id": f"{s.context.trace_id:032x}",
                    "span_id": f"{s.context.span_id:016x}",
                    "parent": f"{s.parent.span_id:016x}" if s.parent else None,
                    "attributes": dict(s.attributes),
                    "status": s.status.status_code.name,
                    "pid": os.getpid(),
                }))
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)


def double(n):
    return n * 2


@job
async def ok(n: int, ctx: Context) -> int:
    out = await run("double", double, n)
    await asyncio.sleep(0.02)
    append("ran.log", f"{ctx.execution_id} {os.getpid()}")
    return out


@job(retry=3, backoff=0)
async def flaky(ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return await run("again", double, ctx.attempt)


@job(retry=1)
async def boom() -> None:
    raise ValueError("boom")


queue = qanat.Queue(jobs=[ok, flaky, boom], storage=os.environ["QANAT_TEST_STORAGE"])
'''

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def obs_app(project: Project) -> ModuleType:
    path = project.root / "obsapp.py"
    path.write_text(OBS_APP)
    return project.load(path, f"qanat_obs_app_{id(project)}")


def metrics_url(project: Project, w: Worker) -> str:
    def found() -> str | None:
        m = re.search(r"metrics at (http://\S+/metrics)", w.stderr())
        return m.group(1) if m else None

    return project.wait_until(found, what="the worker's metrics address")


def scrape(url: str, token: str | None = None) -> Samples:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as res:
        assert res.status == 200
        text = res.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def start(project: Project, app: ModuleType, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Enqueue ``(job, input)`` calls as a client; their execution ids."""

    async def body(q: Queue) -> list[str]:
        out: list[Execution] = [await q.jobs[name].start(**data) for name, data in calls]
        return [h.id for h in out]

    return project.client(body, app=app.queue)


@pytest.mark.timeout(60)
def test_worker_metrics_move_as_its_executions_end(project: Project) -> None:
    app = obs_app(project)
    token = "s3cret-token"
    w = project.worker("--metrics-port", "0", "--metrics-token", token, app="obsapp:queue")
    url = metrics_url(project, w)
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(url)
    assert refused.value.code == 401
    before = scrape(url, token)
    assert value(before, "qanat_executions_started_total", job="ok") == 0

    ids = start(project, app, [("ok", {"n": i}) for i in range(5)] + [("flaky", {}), ("boom", {})])
    for ident in ids:
        project.wait_finished(ident)

    def settled() -> Samples | None:
        got = scrape(url, token)  # the storage gauges are cached for 2 s: wait for them
        return got if value(got, "qanat_executions", job="ok", status="completed") == 5 else None

    got = project.wait_until(settled, what="the storage gauges")
    assert value(got, "qanat_storage_up") == 1
    assert value(got, "qanat_executions_started_total", job="ok") == 5
    assert value(got, "qanat_executions_finished_total", job="ok", status="completed") == 5
    assert value(got, "qanat_executions_retried_total", job="flaky") == 1
    assert value(got, "qanat_executions_finished_total", job="flaky", status="completed") == 1
    assert value(got, "qanat_executions_finished_total", job="boom", status="failed") == 1
    assert value(got, "qanat_step_duration_seconds_count", job="ok", step="double") == 5
    assert value(got, "qanat_execution_duration_seconds_count", job="ok", status="completed") == 5
    latency = sum(
        value(got, "qanat_claim_latency_seconds_count", job=j) for j in ("ok", "flaky", "boom")
    )
    assert latency == 7
    assert value(got, "qanat_executions", job="boom", status="failed") == 1


def test_metrics_on_a_public_address_need_a_token(project: Project) -> None:
    obs_app(project)
    for processes in ("1", "2"):
        res = project.qanat(
            "worker",
            "obsapp:queue",
            "--processes",
            processes,
            "--metrics-port",
            "0",
            "--metrics-host",
            "0.0.0.0",
            app=None,
            env=project.env(QANAT_TOKEN=""),
        )
        assert res.returncode != 0
        assert "refusing to bind 0.0.0.0 without a token" in res.stderr, res.stderr


@pytest.mark.timeout(90)
def test_processes_share_one_port_showing_every_processs_counts(project: Project) -> None:
    app = obs_app(project)
    sup = project.worker(
        "--processes", "2", "--concurrency", "2", "--metrics-port", "0", app="obsapp:queue", count=2
    )
    url = metrics_url(project, sup)
    n = 30
    ids = start(project, app, [("ok", {"n": i}) for i in range(n)])
    for ident in ids:
        project.wait_finished(ident)
    ran = project.wait_until(lambda: len(lines := project.lines("ran.log")) == n and lines)
    per_pid: dict[str, int] = {}
    for line in ran:
        pid = line.split()[1]
        per_pid[pid] = per_pid.get(pid, 0) + 1
    assert len(per_pid) == 2, f"both processes must run some: {per_pid}"
    # each child writes its counts for its siblings every second: once a scrape shows
    # them all, every scrape does, whichever child answers it
    project.wait_until(
        lambda: value(scrape(url), "qanat_executions_started_total", job="ok") == n,
        what="both processes' counts in one scrape",
    )
    for _ in range(6):
        got = scrape(url)
        assert value(got, "qanat_executions_started_total", job="ok") == n
        assert value(got, "qanat_executions_finished_total", job="ok", status="completed") == n
        assert value(got, "qanat_step_duration_seconds_count", job="ok", step="double") == n


@pytest.mark.timeout(60)
def test_a_callers_trace_continues_in_the_worker_process(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = obs_app(project)
    spans_file = project.root / "spans.jsonl"
    monkeypatch.setenv("QANAT_TEST_SPANS", str(spans_file))
    w = project.worker(app="obsapp:queue")
    with sdk_tracing() as here:
        from opentelemetry import trace

        with trace.get_tracer("test").start_as_current_span("web request") as request:
            ok_id, flaky_id = start(project, app, [("ok", {"n": 3}), ("flaky", {})])
    root = request.get_span_context()
    assert [s.name for s in here.get_finished_spans()] == ["web request"]
    project.wait_finished(ok_id)
    project.wait_finished(flaky_id)

    def spans() -> list[dict[str, Any]] | None:
        got = [json.loads(line) for line in _lines(spans_file)]
        return got if len([s for s in got if s["name"] == "qanat.execution"]) == 3 else None

    got = project.wait_until(spans, what="3 attempt spans from the worker")
    assert {s["pid"] for s in got} == {w.pid}, "recorded in the worker process"
    assert {s["trace_id"] for s in got} == {f"{root.trace_id:032x}"}, "one trace"
    attempts = [s for s in got if s["name"] == "qanat.execution"]
    for s in attempts:
        assert s["parent"] == f"{root.span_id:016x}"
    by_run = {(s["attributes"]["qanat.execution_id"], s["attributes"]["qanat.attempt"]): s
              for s in attempts}  # fmt: skip
    assert set(by_run) == {(ok_id, 1), (flaky_id, 1), (flaky_id, 2)}
    assert by_run[(ok_id, 1)]["attributes"]["qanat.job"] == "ok"
    assert by_run[(flaky_id, 1)]["status"] == "ERROR"
    assert by_run[(flaky_id, 2)]["attributes"]["qanat.status"] == "completed"
    steps = {s["attributes"]["qanat.step"]: s for s in got if s["name"] == "qanat.step"}
    assert steps["double"]["parent"] == by_run[(ok_id, 1)]["span_id"]
    assert steps["again"]["parent"] == by_run[(flaky_id, 2)]["span_id"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
